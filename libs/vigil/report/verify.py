"""Check an evidence pack with nothing but the pack and the auditor's public key.

1. The embedded checkpoint's Ed25519 signature verifies with the given key.
2. Every embedded entry: its event hashes to its ``event_sha256``, its fields to its ``entry_hash``, and its audit
   path folds to the checkpoint's Merkle root (``proofs``).
3. Every cited fact equals what its entry's event holds at its pointer; every other leaf is marked as read from an
   API (``cite``); the pack's subject is the version its registration event names.

The first failure is reported naming the entry (seq, type, event id) — or the checkpoint or path — it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vigil.report.cite import API, CITE, PointerError, resolve, walk
from vigil.report.collect import FORMAT, sign_off_status
from vigil.report.proofs import checkpoint_problem, inclusion_problem, public_key


@dataclass
class Verdict:
    """What the check found: ``problem`` is None when the pack holds."""

    problem: str | None = None
    entries_checked: int = 0
    facts_cited: int = 0
    facts_from_apis: list[str] = field(default_factory=list)  # the sources of facts no audit entry backs
    checkpoint_size: int | None = None
    key_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _name(entry_id: str, entries: dict[str, Any]) -> str:
    record = entries.get(entry_id) or {}
    entry = record.get("entry") if isinstance(record, dict) else None
    if isinstance(entry, dict):
        return f"entry {entry.get('seq')} ({entry.get('event_type')}, event {entry_id})"
    return f"entry for event {entry_id}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def verify_pack(pack: dict[str, Any], key_text: str) -> Verdict:
    """The whole offline check of ``pack`` against the auditor's public key (raw 32 bytes, hex or base64)."""
    verdict = Verdict()
    try:
        key_id, key = public_key(key_text)
    except ValueError as exc:
        verdict.problem = f"public key: {exc}"
        return verdict
    verdict.key_id = key_id
    if not isinstance(pack, dict) or pack.get("format") != FORMAT:
        verdict.problem = f"not an evidence pack (format is not {FORMAT})"
        return verdict
    audit = pack.get("audit") or {}
    checkpoint = audit.get("checkpoint")
    entries = audit.get("entries")
    if not isinstance(checkpoint, dict) or not isinstance(entries, dict):
        verdict.problem = "the pack carries no audit checkpoint or no entries"
        return verdict
    verdict.checkpoint_size = checkpoint.get("to_seq")
    problem = checkpoint_problem(checkpoint, key_id, key)
    if problem:
        verdict.problem = f"checkpoint 1..{checkpoint.get('to_seq')}: {problem}"
        return verdict
    for event_id, record in entries.items():
        problem = inclusion_problem(record, checkpoint)
        if problem is None and record["entry"].get("event_id") != event_id:
            problem = "it is filed under another event id"
        if problem:
            verdict.problem = f"{_name(event_id, entries)}: {problem}"
            return verdict
        verdict.entries_checked += 1
    verdict.problem = _check_facts(pack, entries, verdict)
    return verdict


def _check_facts(pack: dict[str, Any], entries: dict[str, Any], verdict: Verdict) -> str | None:
    for path, node in walk(pack.get("sections")):
        if isinstance(node, dict) and CITE in node:
            event_id = str(node[CITE])
            record = entries.get(event_id)
            if not isinstance(record, dict):
                return f"{path} cites event {event_id}, whose entry and proof the pack does not carry"
            try:
                expected = resolve(record["event"], str(node.get("pointer", "")))
            except PointerError as exc:
                return f"{_name(event_id, entries)}: {path} points at nothing in its event ({exc})"
            if "value" not in node or node["value"] != expected:
                return (
                    f"{_name(event_id, entries)}: the pack shows {_short(node.get('value'))} at {path}, but the"
                    f" audited event has {_short(expected)} at {node.get('pointer')}"
                )
            verdict.facts_cited += 1
        elif isinstance(node, dict) and API in node:
            verdict.facts_from_apis.append(str(node[API]))
        else:
            return f"{path} holds {_short(node)}, neither cited from an audit entry nor marked as read from an API"
    if pack.get("kind") == "deployment":
        return _check_period(pack, entries)
    return _check_subject(pack, entries) or _check_status(pack)


def _check_subject(pack: dict[str, Any], entries: dict[str, Any]) -> str | None:
    """The title the reader sees must be the version the cited registration is about."""
    subject = pack.get("subject") or {}
    model_section = (pack.get("sections") or {}).get("model") or {}
    cite = model_section.get("event_id")
    if not isinstance(cite, dict) or CITE not in cite:
        return "the pack does not cite the event that registered its version"
    event_id = str(cite[CITE])
    data = entries[event_id]["event"].get("data", {})
    if (data.get("model"), data.get("version")) != (subject.get("model"), subject.get("version")):
        return (
            f"{_name(event_id, entries)}: the pack is titled {subject.get('model')} v{subject.get('version')} but its"
            f" registration event is about {data.get('model')} v{data.get('version')}"
        )
    return None


def _check_status(pack: dict[str, Any]) -> str | None:
    """A pack may say "signed off" only when its cited sign-off approved its cited card texts; the first page's
    claim is recomputed from the cited facts, so DRAFT cannot be edited away."""
    human = (pack.get("sections") or {}).get("human") or {}
    try:
        expected = sign_off_status(human)
    except (KeyError, TypeError) as exc:
        return f"sections.human is malformed ({type(exc).__name__}: {exc})"
    status = pack.get("status") or {}
    if bool(status.get("draft")) != expected["draft"]:
        claimed, cited_draft = status.get("draft"), expected["draft"]
        return f"the pack's status says draft={claimed}, but its cited card entries say draft={cited_draft}"
    if not expected["draft"] and status.get("signed_off_by") != expected["signed_off_by"]:
        claimed, signer = status.get("signed_off_by"), expected["signed_off_by"]
        return f"the pack names {claimed} as signer, but the cited sign-off is by {signer}"
    return None


def _check_period(pack: dict[str, Any], entries: dict[str, Any]) -> str | None:
    """A period report's decisions and windows must be about its deployment and inside its period."""
    subject = pack.get("subject") or {}
    name = subject.get("deployment")
    try:
        start, end = (datetime.fromisoformat(str(subject[k]).replace("Z", "+00:00")) for k in ("from", "to"))
    except (KeyError, ValueError) as exc:
        return f"the pack's period is malformed ({exc})"
    sections = pack.get("sections") or {}
    for group in ("decisions", "windows"):
        for index, facts in enumerate(sections.get(group) or []):
            cite = (facts or {}).get("data") if isinstance(facts, dict) else None
            if not isinstance(cite, dict) or CITE not in cite:
                return f"sections.{group}[{index}] does not cite its event"
            event_id = str(cite[CITE])
            entry = entries[event_id]["entry"]
            about = str(entry["subject"])
            if about != f"deployment/{name}" and not about.startswith(f"deployment/{name}/"):
                return f"{_name(event_id, entries)}: it is about {about}, not deployment {name}"
            when = datetime.fromisoformat(str(entry["event_time"]).replace("Z", "+00:00"))
            if not start <= when < end:
                return f"{_name(event_id, entries)}: its time {entry['event_time']} is outside the report's period"
    return None
