"""The entrypoint allow-list: which patterns match, the default, and that a refusal happens before any import."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vigil.trainer.runner import NOT_ALLOWED, RunFailure, entrypoint_refusal, load_entrypoint
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.unit

EXAMPLES = ["vigil.trainer.examples.*"]


@pytest.mark.parametrize(
    ("entrypoint", "allow", "allowed"),
    [
        ("vigil.trainer.examples.patient_risk:train", EXAMPLES, True),
        ("vigil.trainer.examples.probe:train", EXAMPLES, True),
        ("os:system", EXAMPLES, False),
        ("vigil.trainer.runner:main", EXAMPLES, False),
        ("vigil.trainer.examplesevil:train", EXAMPLES, False),  # a prefix of the name is not the package
        ("acme.train:fit", ["acme.train"], True),  # one module
        ("acme.train.sub:fit", ["acme.train"], False),
        ("acme.train:fit", ["acme.train:fit"], True),  # with a colon: the whole entrypoint
        ("acme.train:evil", ["acme.train:fit"], False),
        ("Acme.train:fit", ["acme.*"], False),  # case-sensitive, whatever the platform
        ("acme.train:fit", [], False),
    ],
)
def test_patterns(entrypoint: str, allow: list[str], allowed: bool) -> None:
    refusal = entrypoint_refusal(entrypoint, allow)
    assert (refusal is None) is allowed
    if refusal is not None:
        assert refusal.startswith(f"{NOT_ALLOWED}: {entrypoint}")


def test_the_default_allows_what_the_demo_and_the_examples_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIGIL_TRAINER_ENTRYPOINT_ALLOW", raising=False)
    allow = TrainerSettings().trainer_entrypoint_allow
    for entrypoint in (
        "vigil.trainer.examples.patient_risk:train",
        "vigil.trainer.examples.breast_cancer:train",
        "vigil.trainer.examples.probe:train",
    ):
        assert entrypoint_refusal(entrypoint, allow) is None
    assert entrypoint_refusal("os:system", allow) is not None


def test_the_allow_list_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_TRAINER_ENTRYPOINT_ALLOW", '["acme.training.*", "vigil.trainer.examples.*"]')
    assert TrainerSettings().trainer_entrypoint_allow == ["acme.training.*", "vigil.trainer.examples.*"]


def test_a_refused_entrypoint_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "vigil_unit_refused_entry"
    (tmp_path / f"{module}.py").write_text("IMPORTED = True\n\ndef train(ctx):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RunFailure) as refused:
        load_entrypoint(f"{module}:train", EXAMPLES)
    assert refused.value.reason == "invalid_input"
    assert str(refused.value).startswith(NOT_ALLOWED)
    assert module not in sys.modules
    # Allowed, the same module loads (so the refusal above was the allow-list, not a broken module).
    try:
        assert callable(load_entrypoint(f"{module}:train", [module]))
    finally:
        sys.modules.pop(module, None)
