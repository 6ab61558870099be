"""The event catalogue: importing this package registers every payload class with the contract checker."""

from vigil.events.catalog import data

__all__ = ["data"]
