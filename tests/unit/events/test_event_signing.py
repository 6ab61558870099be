"""Signed records (vigil.events.signing): Merkle batches, proofs, the verifier's refusals and its root cache."""

from __future__ import annotations

import hashlib
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support.signing import as_version_1
from vigil.events.signing import (
    FORMAT_VERSION,
    HEADER_PROOF,
    HEADER_SIGNATURE,
    MAX_BATCH,
    RecordVerifier,
    SignatureRejected,
    SigningKey,
    claimed_kid,
    is_signed,
    leaf_digest,
    merkle_root_and_proofs,
    root_from_proof,
    strip_signing,
)

pytestmark = pytest.mark.unit


def _key(name: str = "producer:a") -> SigningKey:
    return SigningKey.of(name, Ed25519PrivateKey.generate())


#: ``vigil-signature``: version (1 byte), key id (8), signature (64), then the proof.
_HEAD = 1 + 8 + 64


def _seal(headers: list[tuple[str, bytes]]) -> bytes:
    (value,) = [v for k, v in headers if k == HEADER_SIGNATURE]
    return value


def _proof(headers: list[tuple[str, bytes]]) -> bytes:
    return _seal(headers)[_HEAD:]


def _with_proof(headers: list[tuple[str, bytes]], proof: bytes) -> list[tuple[str, bytes]]:
    return [(k, v[:_HEAD] + proof if k == HEADER_SIGNATURE else v) for k, v in headers]


def _naive_root(leaves: list[bytes]) -> bytes:
    """The tree written out plainly: pair neighbours, carry an odd last node up unchanged."""
    level = leaves
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    return level[0]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 64, 127, 128])
def test_every_proof_folds_to_the_root(count: int) -> None:
    leaves = [leaf_digest(f"record {i}".encode()) for i in range(count)]
    root, proofs = merkle_root_and_proofs(leaves)
    assert root == _naive_root(leaves)
    for leaf, proof in zip(leaves, proofs, strict=True):
        assert root_from_proof(leaf, proof) == root
    # a proof does not fit another leaf of the batch (unless the batch has one leaf)
    if count > 1:
        assert root_from_proof(leaves[0], proofs[1]) != root


def test_broken_proofs_are_refused_with_a_reason() -> None:
    leaves = [leaf_digest(bytes([i])) for i in range(5)]
    _, proofs = merkle_root_and_proofs(leaves)
    for bad in (b"", proofs[0][:-1], proofs[0] + b"x" * 32, b"\x00\x09\x00\x05" + proofs[0][4:]):
        with pytest.raises(SignatureRejected) as info:
            root_from_proof(leaves[0], bad)
        assert info.value.reason == "malformed_signature"


def test_a_signed_batch_verifies_with_one_signature_check() -> None:
    key = _key()
    values = [f"event {i}".encode() for i in range(MAX_BATCH + 3)]  # two signatures
    headers = key.sign_values(values)
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    for value, h in zip(values, headers, strict=True):
        assert is_signed(h)
        assert verifier.verify(value, h) == key.kid
    assert verifier.signature_checks == 2
    assert strip_signing([*headers[0], ("traceparent", b"x")]) == [("traceparent", b"x")]


def _refusal(verifier: RecordVerifier, value: bytes, headers: list[tuple[str, bytes]]) -> str:
    with pytest.raises(SignatureRejected) as info:
        verifier.verify(value, headers)
    return info.value.reason


def test_refusals_unsigned_unknown_key_wrong_key_tampered_value() -> None:
    key, other = _key(), _key()
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    value = b'{"type": "rollback.requested"}'
    good = key.sign_values([value])[0]
    assert _refusal(verifier, value, []) == "unsigned"
    assert _refusal(verifier, value, [("traceparent", b"00-ab")]) == "unsigned"
    assert _refusal(verifier, value, other.sign_values([value])[0]) == "unknown_key"
    # another key's signature presented under the trusted key's id
    theirs = _seal(other.sign_values([value])[0])
    forged = [(HEADER_SIGNATURE, theirs[:1] + bytes.fromhex(key.kid) + theirs[9:])]
    assert _refusal(verifier, value, forged) == "bad_signature"
    # the signed bytes changed after signing: the leaf no longer folds to the signed root
    assert _refusal(verifier, value + b" ", good) == "bad_signature"
    seal = _seal(good)
    assert _refusal(verifier, value, [(HEADER_SIGNATURE, seal[:_HEAD])]) == "malformed_signature"  # no proof
    assert _refusal(verifier, value, [(HEADER_SIGNATURE, seal[:40])]) == "malformed_signature"  # cut short
    assert _refusal(verifier, value, [(HEADER_SIGNATURE, b"\x01" + seal[1:])]) == "malformed_signature"  # version
    assert _refusal(verifier, value, [(HEADER_SIGNATURE, b"")]) == "malformed_signature"
    assert verifier.verify(value, good) == key.kid
    assert claimed_kid(good) == key.kid and claimed_kid(forged) == key.kid and claimed_kid([]) is None
    # two signing headers: the refusal names the key of the one the verifier read (the last), as the scan does
    assert claimed_kid([*other.sign_values([b"x"])[0], *good]) == key.kid
    assert claimed_kid([*good, *other.sign_values([b"x"])[0]]) == other.kid


def test_one_header_of_version_2_carries_key_signature_and_proof() -> None:
    key = _key()
    values = [f"event {i}".encode() for i in range(4)]
    for headers in key.sign_values(values):
        assert [k for k, _ in headers] == [HEADER_SIGNATURE]
        seal = _seal(headers)
        assert seal[0] == FORMAT_VERSION and seal[1:9] == bytes.fromhex(key.kid)
        assert len(seal) == _HEAD + 4 + 32 * 2  # four leaves: two levels


def test_records_in_the_first_format_still_verify_and_its_refusals_hold() -> None:
    """Records produced before the one-header format, and dead letters replayed with their original headers."""
    key, other = _key(), _key()
    values = [f"event {i}".encode() for i in range(6)]
    old = [as_version_1(h) for h in key.sign_values(values)]
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    for value, headers in zip(values, old, strict=True):
        assert is_signed(headers)
        assert verifier.verify(value, headers) == key.kid
        assert claimed_kid(headers) == key.kid
    assert strip_signing([*old[0], ("traceparent", b"x")]) == [("traceparent", b"x")]
    fresh = RecordVerifier({key.kid: key.private.public_key()})
    assert _refusal(fresh, values[0] + b" ", old[0]) == "bad_signature"
    assert _refusal(fresh, values[0], as_version_1(other.sign_values([values[0]])[0])) == "unknown_key"
    assert _refusal(fresh, values[0], [h for h in old[0] if h[0] != HEADER_PROOF]) == "malformed_signature"
    # both formats of one batch share the verified root: the second costs no signature check
    both = RecordVerifier({key.kid: key.private.public_key()})
    new = key.sign_values(values)
    assert both.verify(values[0], new[0]) == key.kid
    assert both.verify(values[1], as_version_1(new[1])) == key.kid
    assert both.signature_checks == 1


def test_a_cached_root_does_not_admit_other_bytes() -> None:
    key = _key()
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    values = [b"a", b"b", b"c"]
    headers = key.sign_values(values)
    assert verifier.verify(values[0], headers[0]) == key.kid
    # same root (cached), same proof, different bytes: the fold gives another root, which is checked and fails
    assert _refusal(verifier, b"evil", headers[0]) == "bad_signature"
    signature = _seal(headers[1])[9:_HEAD]
    assert len(signature) == 64


def _full_fold_verdict(key: SigningKey, value: bytes, headers: list[tuple[str, bytes]]) -> str:
    """What a verifier that remembers nothing says: fold the whole proof, check the signature."""
    try:
        return RecordVerifier({key.kid: key.private.public_key()}).verify(value, headers)
    except SignatureRejected as exc:
        return exc.reason


def _tampered(rng: random.Random, value: bytes, headers: list[tuple[str, bytes]]) -> tuple[bytes, list]:
    """The record with one thing changed: its bytes, its position, one sibling hash, or its proof's length."""
    proof = _proof(headers)
    kind = rng.choice(["value", "index", "sibling", "sibling", "extra", "short"])
    if kind == "value":
        return value + b" ", headers
    if kind == "index":
        size = int.from_bytes(proof[2:4], "big")
        index = (int.from_bytes(proof[:2], "big") + rng.randrange(1, size + 1)) % max(size, 1)
        proof = index.to_bytes(2, "big") + proof[2:]
    elif kind == "sibling" and len(proof) > 4:
        at = 4 + 32 * rng.randrange((len(proof) - 4) // 32) + rng.randrange(32)
        proof = proof[:at] + bytes([proof[at] ^ 0x01]) + proof[at + 1 :]
    elif kind == "extra":
        proof = proof + bytes(32)
    elif len(proof) > 4:
        proof = proof[:-32]
    return value, _with_proof(headers, proof)


@pytest.mark.parametrize("seed", range(12))
def test_remembered_nodes_give_the_full_folds_verdict(seed: int) -> None:
    """The verifier stops a fold at a node an earlier record verified only when the rest of the proof is that
    record's: for good and tampered records in any order, across partitions' interleavings, it says what a fold
    to the root with a signature check says — and checks one signature per batch."""
    rng = random.Random(seed)
    key = _key()
    values = [f"event {seed} {i}".encode() * rng.randrange(1, 4) for i in range(rng.randrange(1, 3 * MAX_BATCH))]
    signed = list(zip(values, key.sign_values(values), strict=True))
    records = [(v, h) if rng.random() < 0.7 else _tampered(rng, v, h) for v, h in signed]
    rng.shuffle(records)  # records of a batch arrive spread over partitions and fetches
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    for value, headers in records:
        expected = _full_fold_verdict(key, value, headers)
        try:
            got = verifier.verify(value, headers)
        except SignatureRejected as exc:
            got = exc.reason
        assert got == expected
    assert verifier.signature_checks <= (len(values) + MAX_BATCH - 1) // MAX_BATCH + sum(
        1 for v, h in records if _full_fold_verdict(key, v, h) == "bad_signature"
    )


def test_a_verified_neighbour_does_not_admit_a_changed_proof() -> None:
    key = _key()
    values = [f"event {i}".encode() for i in range(8)]
    headers = key.sign_values(values)
    verifier = RecordVerifier({key.kid: key.private.public_key()})
    assert verifier.verify(values[0], headers[0]) == key.kid
    # record 1 shares record 0's parent; its proof's top sibling is changed: the fold from the shared parent on is
    # not the verified one, so it runs to a root nobody signed
    proof = _proof(headers[1])
    bad = proof[:-1] + bytes([proof[-1] ^ 0xFF])
    assert _refusal(verifier, values[1], _with_proof(headers[1], bad)) == ("bad_signature")
    assert verifier.signature_checks == 2
    assert verifier.verify(values[1], headers[1]) == key.kid  # the untouched record still verifies, from the cache
    assert verifier.signature_checks == 2


def test_the_remembered_nodes_are_bounded_and_verified_roots_outlive_them() -> None:
    key = _key()
    verifier = RecordVerifier({key.kid: key.private.public_key()}, cache_size=40)
    batches = []
    for round_ in range(4):
        values = [f"round {round_} event {i}".encode() for i in range(MAX_BATCH)]
        batches.append(list(zip(values, key.sign_values(values), strict=True)))
    for batch in batches:
        for value, headers in batch:
            assert verifier.verify(value, headers) == key.kid
            assert verifier._node_count <= 40
    # every tree's nodes were forgotten many times over (a tree has 127), its root was not: no signature again
    assert verifier.signature_checks == 4
    for batch in batches:
        for value, headers in batch[::7]:
            assert verifier.verify(value, headers) == key.kid
    assert verifier.signature_checks == 4
    # with (almost) nothing remembered, every tree's root is checked again on the second pass
    forgetful = RecordVerifier({key.kid: key.private.public_key()}, cache_size=1, root_cache_size=2)
    for batch in batches + batches:
        value, headers = batch[0]
        assert forgetful.verify(value, headers) == key.kid
    assert forgetful.signature_checks == 8
