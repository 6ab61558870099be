"""The embedded platform: broker, Postgres and the six services as local processes (``vigil stack``, ``vigil demo``).

Re-exported here, for code outside the package (the test infrastructure, the benchmarks): the error every part of it
raises and a free local port; the rest of ``_proc`` stays private to the package.
"""

from vigil.stack._proc import StackError, free_port

__all__ = ["StackError", "free_port"]
