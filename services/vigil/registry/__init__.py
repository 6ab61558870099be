"""Registry: the system of record for datasets and models, their versions, aliases, gates and lineage."""
