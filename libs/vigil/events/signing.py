"""Signed records: every record on the bus carries an Ed25519 signature of its producer, batched under a Merkle root.

Why batches: one Ed25519 signature costs ~50 µs and one verification ~90 µs here, more than the whole bus spends on
an event (docs/security.md). So a producer signs the root of a small Merkle tree over the records it hands the
client at once, and each record carries the root's signature plus its inclusion proof; a consumer verifies the
signature once per root (:class:`RecordVerifier` caches verified roots) and only hashes for the other records.

Wire format (a Kafka header, so the envelope — which the auditor hashes — stays exactly what was produced): one
header ``vigil-signature`` whose value is

- 1 byte: the format version, 2;
- 8 bytes: the key id (:func:`key_id`, raw: its 16 hex chars are these bytes), naming the producer's public key in the
  trust store;
- 64 bytes: Ed25519 over ``b"vigil-batch-v1\\0" + root``;
- the inclusion proof: ``index`` and ``count`` (2 bytes each, big-endian) then the sibling hashes (32 bytes each) from
  the leaf up. Leaf = sha256(0x00 ‖ value); node = sha256(0x01 ‖ left ‖ right); an odd last node moves up as is.

Why one header: every byte of a record costs the producer, the broker and the consumer — 300 bytes of unsigned
padding in place of the signature cost 10–21 µs per event end to end on the embedded broker (issue #20's bus
overhead), about as much as the signing's CPU — and the first format's three headers (``vigil-kid`` with the id as
hex, ``vigil-sig``, ``vigil-proof``) spent 27 bytes more per record on names and hex.
Records in that format (version 1) are still verified: records produced before the change, and dead letters
replayed with their original headers. The signed message is the same in both, so nothing re-signs.

The signature covers the record's value (the canonical envelope) only: not its key, topic, partition or other headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HEADER_SIGNATURE = "vigil-signature"
#: The first format's headers (version 1), still verified and still recognised as signing headers.
HEADER_KID = "vigil-kid"
HEADER_SIG = "vigil-sig"
HEADER_PROOF = "vigil-proof"
SIGNING_HEADERS = frozenset({HEADER_SIGNATURE, HEADER_KID, HEADER_SIG, HEADER_PROOF})
FORMAT_VERSION = 2
_KID_BYTES = 8
_SIG_BYTES = 64
#: Version, key id and signature: the part of ``vigil-signature`` before the proof.
_SEAL_HEAD = 1 + _KID_BYTES + _SIG_BYTES
#: Records per signature at most: the proof grows with log2 of it (7 hashes = 224 bytes at 128).
MAX_BATCH = 128
_DOMAIN = b"vigil-batch-v1\x00"
_HASH = 32
_LEAF = hashlib.sha256(b"\x00")
_PROOF_HEAD = struct.Struct(">HH")  # index, count


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
    leaf = _LEAF.copy()  # the prefix hashed once, not the value copied behind it
    leaf.update(value)
    return leaf.digest()


def merkle_root_and_proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root over ``leaves`` and, per leaf, its encoded proof (index, count, siblings from the leaf up).

    The proofs are assembled a column at a time: per level, the sibling of every leaf, written once per node and
    repeated over the leaves below it (a node's leaves are consecutive), then one join per leaf — a Python step per
    node instead of one per leaf and level (the signing side of issue #20's bus cost).
    """
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
    head = count.to_bytes(2, "big")
    columns: list[list[bytes]] = [[i.to_bytes(2, "big") + head for i in range(count)]]
    for depth, level in enumerate(levels[:-1]):
        width, size = 1 << depth, len(level)
        column: list[bytes] = []
        for node in range(size):
            sibling = node ^ 1
            # an odd last node has no sibling at this level: it moves up as is, and its proof says nothing here
            column += [level[sibling] if sibling < size else b""] * width
        columns.append(column)
    return levels[-1][0], [b"".join(parts) for parts in zip(*columns, strict=False)]


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
        """The signing header for each value (a list of one, to extend a record's headers with), one signature per
        :data:`MAX_BATCH` values."""
        out: list[list[tuple[str, bytes]]] = []
        prefix = bytes((FORMAT_VERSION,)) + bytes.fromhex(self.kid)
        for start in range(0, len(values), MAX_BATCH):
            chunk = values[start : start + MAX_BATCH]
            root, proofs = merkle_root_and_proofs([leaf_digest(v) for v in chunk])
            head = prefix + self.private.sign(_DOMAIN + root)
            out.extend([(HEADER_SIGNATURE, head + proof)] for proof in proofs)
        return out


def is_signed(headers: Iterable[tuple[str, bytes]]) -> bool:
    """True if the headers already carry a signature (a replayed record keeps its original producer's)."""
    return not _SIGNATURE_NAMES.isdisjoint([k for k, _ in headers])  # asked once per produced record


_SIGNATURE_NAMES = frozenset({HEADER_SIGNATURE, HEADER_SIG})


def claimed_kid(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The key id a record's signing header names, as hex (bounded, printable) — for the record of a refusal. The
    header the verifier reads: the last ``vigil-signature``, else the last version-1 ``vigil-kid``."""
    listed = list(headers or ())
    seal = _find_seal(listed)
    if seal is not None:
        return seal[1 : 1 + _KID_BYTES].hex() or None
    for k, v in reversed(listed):
        if k == HEADER_KID:
            return v[:64].decode(errors="replace")
    return None


def strip_signing(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The headers without signing headers."""
    return [(k, v) for k, v in headers if k not in SIGNING_HEADERS]


#: What a verified node remembers: the state of the proof it was reached by at its level — the node's index and the
#: level's size, and the proof with the offset of the siblings above it. A later proof in the same state from that
#: node on folds to the same verified root (:meth:`RecordVerifier.verify`).
_NodeState = tuple[int, int, bytes, int]


class RecordVerifier:
    """Checks records against a set of public keys by id; remembers the tree nodes it has verified.

    ``keys`` maps key id → public key. A batch of N records costs one Ed25519 verification, and each record's fold
    stops at the first node that an earlier record of the same tree already folded through to a verified root —
    provided the rest of its proof (position and siblings above that node) is that earlier proof's, which makes
    the rest of the fold the same hashes with the same result. So the verdict is the full fold's; only the repeated
    hashing is skipped: a record whose neighbour was verified costs its leaf hash and one or two node hashes, not
    seven (the consuming side of issue #20's bus cost). Remembered nodes are per key id and bounded (``cache_size``
    nodes, forgotten all at once). Verified roots are remembered apart, longer (``root_cache_size`` roots): a fold
    that reaches one after its nodes were forgotten — a consumer catching up reads a partition far ahead of the
    others — costs hashes, not another Ed25519 check. Failed verifications remember nothing.
    """

    def __init__(
        self, keys: dict[str, Ed25519PublicKey], *, cache_size: int = 32_768, root_cache_size: int = 16_384
    ) -> None:
        # Per key id as it travels (bytes: raw in ``vigil-signature``, hex in version 1's ``vigil-kid``): the id, its
        # public key and its remembered nodes — one lookup per record; both spellings share one entry.
        self._signers: dict[bytes, tuple[str, Ed25519PublicKey, dict[bytes, _NodeState]]] = {}
        for kid, public in keys.items():
            entry: tuple[str, Ed25519PublicKey, dict[bytes, _NodeState]] = (kid, public, {})
            self._signers[kid.encode()] = entry
            with contextlib.suppress(ValueError):  # an id that is not hex cannot travel raw
                self._signers[bytes.fromhex(kid)] = entry
        self._node_count = 0
        self._cache_size = cache_size
        self._roots: set[tuple[str, bytes]] = set()
        self._root_cache_size = root_cache_size
        self.signature_checks = 0

    def verify(self, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> str:
        """The key id that signed ``value``, or SignatureRejected(unsigned / unknown_key / bad_signature / …)."""
        headers = headers or ()
        if headers and headers[-1][0] == HEADER_SIGNATURE:  # as the producer appends it: what the scan would find
            seal: bytes | None = headers[-1][1]
        else:
            seal = _find_seal(headers)
        if seal is not None:
            if len(seal) < _SEAL_HEAD or seal[0] != FORMAT_VERSION:
                raise SignatureRejected(
                    "malformed_signature", f"{HEADER_SIGNATURE} is not a version {FORMAT_VERSION} signature"
                )
            kid_raw, sig, proof = seal[1 : 1 + _KID_BYTES], seal[1 + _KID_BYTES : _SEAL_HEAD], seal[_SEAL_HEAD:]
        else:
            kid_raw, sig, proof = _signing_headers(headers)
        signer = self._signers.get(kid_raw)
        if signer is None:
            kid = kid_raw.hex() if seal is not None else kid_raw.decode(errors="replace")
            raise SignatureRejected("unknown_key", f"key {kid[:40]!r} is not in the trust store")
        kid, public, known = signer
        end = len(proof)
        if end < 4 or (end - 4) % _HASH:
            raise SignatureRejected("malformed_signature", "the inclusion proof has a bad length")
        index, size = _PROOF_HEAD.unpack_from(proof)
        if index >= size:
            raise SignatureRejected("malformed_signature", "the inclusion proof's index is outside its batch")
        sha256 = hashlib.sha256
        leaf = _LEAF.copy()
        leaf.update(value or b"")
        h = leaf.digest()
        offset = 4
        # The nodes this fold computes, each with its state (for a batch of one: the leaf, which is its root).
        path: list[tuple[bytes, _NodeState]] = []
        if size == 1:
            if offset != end:
                raise SignatureRejected("malformed_signature", "the inclusion proof is too long")
            seen = known.get(h)
            if seen is not None and _reached_before(seen, 0, 1, proof, offset):
                return kid
            path.append((h, (0, 1, proof, offset)))
        while size > 1:
            if index & 1:
                if offset >= end:
                    raise SignatureRejected("malformed_signature", "the inclusion proof is too short")
                h = sha256(b"\x01" + proof[offset : offset + _HASH] + h).digest()
            elif index + 1 < size:  # a right sibling exists at this level; else this node moves up as is
                if offset >= end:
                    raise SignatureRejected("malformed_signature", "the inclusion proof is too short")
                h = sha256(b"\x01" + h + proof[offset : offset + _HASH]).digest()
            else:
                index >>= 1
                size = (size + 1) >> 1
                continue
            offset += _HASH
            index >>= 1
            size = (size + 1) >> 1
            seen = known.get(h)
            if seen is not None and _reached_before(seen, index, size, proof, offset):
                self._remember(known, path)  # the rest of this fold is an earlier one's, up to a verified root
                return kid
            path.append((h, (index, size, proof, offset)))
        if offset != end:
            raise SignatureRejected("malformed_signature", "the inclusion proof is too long")
        root = (kid, h)
        if root not in self._roots:
            self.signature_checks += 1
            try:
                public.verify(sig, _DOMAIN + h)
            except InvalidSignature:
                raise SignatureRejected("bad_signature", f"the signature does not verify with key {kid}") from None
            if len(self._roots) >= self._root_cache_size:
                self._roots.clear()
            self._roots.add(root)
        self._remember(known, path)
        return kid

    def _remember(self, known: dict[bytes, _NodeState], path: list[tuple[bytes, _NodeState]]) -> None:
        """Record nodes that fold to a verified root; forget everything when the bound is reached."""
        if self._node_count + len(path) > self._cache_size:
            for _kid, _public, nodes in self._signers.values():
                nodes.clear()
            self._node_count = 0
        for node, state in path:
            if node not in known:
                known[node] = state
                self._node_count += 1


def _find_seal(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    """The last ``vigil-signature`` header's value, or None."""
    for k, v in reversed(headers):
        if k == HEADER_SIGNATURE:
            return v
    return None


def _signing_headers(headers: Sequence[tuple[str, bytes]]) -> tuple[bytes, bytes, bytes]:
    """Version 1: (key id, signature, proof) from anywhere in the headers, the last of each; SignatureRejected if
    any is missing."""
    kid_raw = sig = proof = None
    for k, v in reversed(headers):  # the producer appends them last
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
    return kid_raw, sig, proof


def _reached_before(seen: _NodeState, index: int, size: int, proof: bytes, offset: int) -> bool:
    """True if a verified fold passed through this node in the same state: same index and level size, and the same
    sibling hashes above it — so folding on would repeat that fold's hashes up to its verified root."""
    return (
        seen[0] == index
        and seen[1] == size
        and len(seen[2]) - seen[3] == len(proof) - offset
        and seen[2][seen[3] :] == proof[offset:]
    )
