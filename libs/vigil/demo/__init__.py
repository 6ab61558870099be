"""The demo: a synthetic upstream that drives the platform so a newcomer can watch the loop work."""
