"""Evidence packs: a model card and change-control record built from the services' public APIs, whose every fact
that comes from an event cites its audit entry with an inclusion proof, so a reviewer can check it offline.

``collect`` reads the APIs and builds the pack (a JSON document), ``cite`` defines how a fact points at an entry,
``proofs`` is an RFC 6962 verifier written here (no auditor code), ``verify`` checks a pack with nothing but the
pack and the auditor's public key, ``render_html`` and ``pdf`` make the documents a person reads. docs/reports.md.
"""
