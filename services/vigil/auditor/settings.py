"""Auditor settings (env ``VIGIL_…``): checkpoint cadence, signing key, trusted keys, retention classes."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from vigil.service.settings import ServiceSettings

SIX_YEARS_DAYS = 6 * 365 + 2  # HIPAA §164.316(b)(2): six years; two leap days in any six-year span
SIX_MONTHS_DAYS = 184  # the longest six calendar months (Jul–Dec)


class AuditorSettings(ServiceSettings):
    """Auditor knobs (env ``VIGIL_…``)."""

    service_name: str = "auditor"
    http_port: int = 8106
    #: Name of this deployment's hash chain (the key of everything on vigil.audit).
    audit_chain: str = Field(default="audit", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    #: A checkpoint is signed after this many new entries, or after ``audit_checkpoint_interval_s`` if any arrived.
    audit_checkpoint_every_entries: int = Field(default=1000, ge=1)
    audit_checkpoint_interval_s: float = Field(default=60.0, gt=0)
    #: Ed25519 private key (32-byte seed) as 64 hex chars or base64. Takes precedence over the key file.
    audit_signing_key: str | None = Field(default=None, repr=False)
    #: Key file (hex or base64 seed, or PEM PKCS#8); default ``<home>/auditor/signing.key``, generated if absent.
    audit_signing_key_file: Path | None = None
    #: Every signed checkpoint is also appended here (JSON lines), outside the database, so a cut tail is detectable
    #: (`vigil audit verify --witness`). Default ``<home>/auditor/witness.jsonl``; put it on other storage.
    audit_witness_file: Path | None = None
    #: Public keys (raw 32 bytes, hex or base64) of earlier signing keys whose checkpoints still verify.
    audit_trusted_public_keys: list[str] = Field(default_factory=list)
    #: Retention classes: days an entry of the class is kept (expiry happens only at checkpoint boundaries).
    audit_retention_days: dict[str, int] = Field(
        default_factory=lambda: {
            "control_plane": SIX_YEARS_DAYS,
            "access": SIX_YEARS_DAYS,
            "stream_digest": SIX_MONTHS_DAYS,
        }
    )
    #: Event type → retention class; a key ending in ``*`` matches a prefix. Unmatched types: ``control_plane``.
    audit_retention_by_type: dict[str, str] = Field(
        default_factory=lambda: {"audit.stream_digest": "stream_digest", "access.recorded": "access"}
    )

    def resolved_witness_file(self) -> Path:
        """Where checkpoints are witnessed: explicit setting, else ``<home>/auditor/witness.jsonl``."""
        return self.audit_witness_file or self.home / "auditor" / "witness.jsonl"

    def resolved_signing_key_file(self) -> Path:
        """Where the signing key lives: explicit setting, else ``<home>/auditor/signing.key``."""
        return self.audit_signing_key_file or self.home / "auditor" / "signing.key"

    def production_refusals(self) -> list[str]:
        """Production also needs a signing key that outlives the process: generating one at start-up would make
        every earlier checkpoint fail as signed by an unknown key after a restart on a fresh volume."""
        problems = super().production_refusals()
        if self.audit_signing_key is None and not self.resolved_signing_key_file().is_file():
            problems.append(
                "no audit signing key: set VIGIL_AUDIT_SIGNING_KEY_FILE to a mounted key (or VIGIL_AUDIT_SIGNING_KEY)"
            )
        return problems
