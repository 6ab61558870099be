"""Signed records: every record on the bus carries an Ed25519 signature of its producer, batched under a Merkle root.

Why batches: one Ed25519 signature costs ~50 µs and one verification ~90 µs here, more than the whole bus spends on
an event (docs/security.md). So a producer signs the root of a small Merkle tree over the records it hands the
client at once, and each record carries the root's signature plus its inclusion proof; a consumer verifies the
signature once per root (:class:`RecordVerifier` caches verified roots) and only hashes for the other records.

Wire format (Kafka headers, so the envelope — which the auditor hashes — stays exactly what was produced):

- ``vigil-kid``: the key id (16 hex chars, :func:`key_id`), naming the producer's public key in the trust store.
- ``vigil-sig``: 64 bytes, Ed25519 over ``b"vigil-batch-v1\\0" + root``.
- ``vigil-proof``: ``index`` and ``count`` (2 bytes each, big-endian) then the sibling hashes (32 bytes each) from
  the leaf up. Leaf = sha256(0x00 ‖ value); node = sha256(0x01 ‖ left ‖ right); an odd last node moves up as is.

The signature covers the record's value (the canonical envelope) only: not its key, topic, partition or other headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER_KID = "vigil-kid"
HEADER_SIG = "vigil-sig"
HEADER_PROOF = "vigil-proof"
SIGNING_HEADERS = frozenset({HEADER_KID, HEADER_SIG, HEADER_PROOF})
#: Records per signature at most: the proof grows with log2 of it (7 hashes = 224 bytes at 128).
MAX_BATCH = 128
_DOMAIN = b"vigil-batch-v1\x00"
_HASH = 32


class SignatureRejected(Exception):
    """A record whose signature does not stand. ``reason`` is a short code fit for a dead letter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def key_id(public: Ed25519PublicKey) -> str:
    """The id of a public key: the first 8 bytes of sha256 of its raw bytes, as hex."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def leaf_digest(value: bytes) -> bytes:
    """The Merkle leaf of one record value."""
    return hashlib.sha256(b"\x00" + value).digest()


def merkle_root_and_proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root over ``leaves`` and, per leaf, its encoded proof (index, count, siblings from the leaf up)."""
    count = len(leaves)
    if not 0 < count <= 0xFFFF:
        raise ValueError(f"a signed batch holds 1..65535 records, not {count}")
    sha256 = hashlib.sha256
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        level = levels[-1]
        nxt = [sha256(b"\x01" + level[j] + level[j + 1]).digest() for j in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
    below_root = levels[:-1]
    head = count.to_bytes(2, "big")
    proofs = []
    for i in range(count):
        parts = [i.to_bytes(2, "big") + head]
        for depth, level in enumerate(below_root):
            sibling = (i >> depth) ^ 1
            if sibling < len(level):
                parts.append(level[sibling])
        proofs.append(b"".join(parts))
    return levels[-1][0], proofs


def root_from_proof(leaf: bytes, proof: bytes) -> bytes:
    """Fold a leaf up its proof; raises SignatureRejected(malformed_signature) if the proof cannot be one."""
    end = len(proof)
    if end < 4 or (end - 4) % _HASH:
        raise SignatureRejected("malformed_signature", "the inclusion proof has a bad length")
    index = int.from_bytes(proof[:2], "big")
    size = int.from_bytes(proof[2:4], "big")
    if index >= size:
        raise SignatureRejected("malformed_signature", "the inclusion proof's index is outside its batch")
    sha256 = hashlib.sha256
    h = leaf
    offset = 4
    while size > 1:
        if index & 1:
            if offset >= end:
                raise SignatureRejected("malformed_signature", "the inclusion proof is too short")
            h = sha256(b"\x01" + proof[offset : offset + _HASH] + h).digest()
            offset += _HASH
        elif index + 1 < size:  # a right sibling exists at this level; else this node moves up as is
            if offset >= end:
                raise SignatureRejected("malformed_signature", "the inclusion proof is too short")
            h = sha256(b"\x01" + h + proof[offset : offset + _HASH]).digest()
            offset += _HASH
        index >>= 1
        size = (size + 1) >> 1
    if offset != end:
        raise SignatureRejected("malformed_signature", "the inclusion proof is too long")
    return h


@dataclass(frozen=True)
class SigningKey:
    """A producer's private key and the principal it signs as (``service:<name>`` or ``producer:<name>``)."""

    principal: str
    private: Ed25519PrivateKey
    kid: str

    @classmethod
    def of(cls, principal: str, private: Ed25519PrivateKey) -> SigningKey:
        return cls(principal, private, key_id(private.public_key()))

    def sign_values(self, values: Sequence[bytes]) -> list[list[tuple[str, bytes]]]:
        """The signing headers for each value, one signature per :data:`MAX_BATCH` values."""
        out: list[list[tuple[str, bytes]]] = []
        kid = self.kid.encode()
        for start in range(0, len(values), MAX_BATCH):
            chunk = values[start : start + MAX_BATCH]
            root, proofs = merkle_root_and_proofs([leaf_digest(v) for v in chunk])
            signature = self.private.sign(_DOMAIN + root)
            out.extend([(HEADER_KID, kid), (HEADER_SIG, signature), (HEADER_PROOF, proof)] for proof in proofs)
        return out


def is_signed(headers: Iterable[tuple[str, bytes]]) -> bool:
    """True if the headers already carry a signature (a replayed record keeps its original producer's)."""
    return any(k == HEADER_SIG for k, _ in headers)


def strip_signing(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The headers without signing headers."""
    return [(k, v) for k, v in headers if k not in SIGNING_HEADERS]


class RecordVerifier:
    """Checks records against a set of public keys by id; remembers the roots it has verified.

    ``keys`` maps key id → public key. Roots are cached per key id (bounded): a batch of N records costs one
    Ed25519 verification and N leaf folds. Failed verifications are not cached.
    """

    def __init__(self, keys: dict[str, Ed25519PublicKey], *, cache_size: int = 16_384) -> None:
        self._keys = dict(keys)
        self._verified: set[tuple[str, bytes]] = set()
        self._cache_size = cache_size
        self.signature_checks = 0

    def verify(self, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> str:
        """The key id that signed ``value``, or SignatureRejected(unsigned / unknown_key / bad_signature / …)."""
        kid_raw = sig = proof = None
        for k, v in reversed(headers or ()):  # the producer appends them last
            if k == HEADER_PROOF:
                proof = v
            elif k == HEADER_SIG:
                sig = v
            elif k == HEADER_KID:
                kid_raw = v
                if sig is not None and proof is not None:
                    break
        if kid_raw is None and sig is None and proof is None:
            raise SignatureRejected("unsigned", "the record carries no signature")
        if kid_raw is None or sig is None or proof is None:
            raise SignatureRejected("malformed_signature", "the record's signing headers are incomplete")
        kid = kid_raw.decode(errors="replace")
        public = self._keys.get(kid)
        if public is None:
            raise SignatureRejected("unknown_key", f"key {kid[:40]!r} is not in the trust store")
        root = root_from_proof(leaf_digest(value or b""), proof)
        cache_key = (kid, root)
        if cache_key in self._verified:
            return kid
        self.signature_checks += 1
        try:
            public.verify(sig, _DOMAIN + root)
        except InvalidSignature:
            raise SignatureRejected("bad_signature", f"the signature does not verify with key {kid}") from None
        if len(self._verified) >= self._cache_size:
            self._verified.clear()
        self._verified.add(cache_key)
        return kid
