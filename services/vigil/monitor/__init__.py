"""Monitor: streaming drift, quality, SLO and fairness per deployment and version."""
