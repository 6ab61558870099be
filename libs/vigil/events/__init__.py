"""Event contracts: envelope, ids, canonical encoding and the typed catalog of payloads."""

from vigil.events.codec import canonical_json, parse_json, sha256_hex
from vigil.events.contracts import ContractError, check_outgoing, decode_event, payload_class, registered
from vigil.events.envelope import Envelope, dataschema_uri, make_event
from vigil.events.ids import new_id, uuid7
from vigil.events.payload import EventPayload

__all__ = [
    "ContractError",
    "Envelope",
    "EventPayload",
    "canonical_json",
    "check_outgoing",
    "dataschema_uri",
    "decode_event",
    "make_event",
    "new_id",
    "parse_json",
    "payload_class",
    "registered",
    "sha256_hex",
    "uuid7",
]
