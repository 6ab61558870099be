"""The event catalogue: importing this package registers every payload class with the contract checker."""

from vigil.events.catalog import (
    access,
    audit,
    cards,
    data,
    deployments,
    models,
    monitoring,
    operations,
    policies,
    security,
    streams,
    training,
)

__all__ = [
    "access",
    "audit",
    "cards",
    "data",
    "deployments",
    "models",
    "monitoring",
    "operations",
    "policies",
    "security",
    "streams",
    "training",
]
