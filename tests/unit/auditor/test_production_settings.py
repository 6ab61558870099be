"""In production the auditor refuses to start without a signing key that outlives the process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vigil.artifacts.keyring import ensure_keyring_file
from vigil.auditor.settings import AuditorSettings
from vigil.service.settings import UnsafeProductionSettings

pytestmark = pytest.mark.unit


def test_production_auditor_needs_a_signing_key_and_artifact_keys(tmp_path: Path) -> None:
    settings = AuditorSettings(home=tmp_path, environment="production")
    with pytest.raises(UnsafeProductionSettings) as refused:
        settings.refuse_unsafe_production()
    assert "no audit signing key" in str(refused.value) and "no artifact encryption key" in str(refused.value)

    ensure_keyring_file(tmp_path / "keys" / "artifacts.json")
    with pytest.raises(UnsafeProductionSettings, match="no audit signing key"):
        settings.refuse_unsafe_production()
    AuditorSettings(
        home=tmp_path, environment="production", audit_signing_key=os.urandom(32).hex()
    ).refuse_unsafe_production()
