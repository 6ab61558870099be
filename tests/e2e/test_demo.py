"""``vigil demo --fast`` end to end, as a user runs it: real processes, embedded broker and Postgres, the whole story
(train → serve → a worse canary rolled back → drift → retrain requested → v3, gradient-boosted trees served as ONNX,
promoted) and the timelines printed. The traffic carries each request's clinic (``site``, a logged attribute, not a
model input), and the story reads the promoted version's fairness gaps per site back from the monitor's windows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.demo.attributes import FAIRNESS_POLICY, SITES

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_demo_fast_reaches_the_end_of_the_story(tmp_path: Path) -> None:
    env = {**os.environ, "VIGIL_HOME": str(tmp_path / "home"), "VIGIL_POSTGRES_FSYNC": "off", "COLUMNS": "160"}
    env.pop("DATABASE_URL", None)  # the demo must stand on the embedded stack alone
    env.pop("VIGIL_DATABASE_URL", None)
    vigil = Path(sys.executable).with_name("vigil")
    result = subprocess.run(
        [str(vigil), "demo", "--fast", "--free-ports"],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "demo complete" in output
    assert "verified ✓" in output
    # Every chapter ended, in order, with what the platform did by itself.
    assert "v2 rolled back by the" in output
    # …and the story says which signal stopped it, and what the label-free estimate said before the labels
    assert " on live labels (" in output or " before its labels (" in output
    assert "label-free estimate of accuracy in the same window: v2 " in output
    assert "retrain.requested (drift)" in output
    assert "v3 (gradient-boosted trees, ONNX) trained on the fresh extract" in output  # a non-linear model, served
    assert "v3 promoted after a Successful canary; registry champion = v3" in output
    # The monitor kept fairness figures per site for the served version, from the attribute the gateway logged:
    # every site a group, labelled rows counted, and gaps within the demo's limits (else v3's canary had failed).
    flat = " ".join(output.split())  # the terminal wraps long lines
    groups = ", ".join([*SITES, "other"])
    fairness = re.search(
        rf"fairness by site on v3's window \({re.escape(groups)}; (\d+) labelled rows\): "
        r"demographic parity difference (\d+\.\d+) \(limit [\d.]+\), equalized odds difference (\d+\.\d+)",
        flat,
    )
    assert fairness, flat[-4000:]
    labelled, dp, eo = int(fairness[1]), float(fairness[2]), float(fairness[3])
    assert labelled > 0
    assert 0.0 <= dp <= FAIRNESS_POLICY["max_demographic_parity_difference"]
    assert 0.0 <= eo <= FAIRNESS_POLICY["max_equalized_odds_difference"]
    # Both timelines walk back to an upstream event: the rollback to v2's data, the promotion through the monitor's
    # retrain request (the fresh extract names it as its cause).
    assert "Why was v2 rolled back?" in output
    assert "Why is v3 serving?" in output
    assert output.count("chain complete back to the upstream event: True") == 2
    promotion_timeline = output[output.index("Why is v3 serving?") :]
    for step in ("deployment.promoted", "model.version.registered", "data.updated", "retrain.requested"):
        assert step in promotion_timeline, step
    # The stack is gone afterwards: nothing left listening under this home.
    status = subprocess.run(
        [str(vigil), "status", "--json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert status.returncode == 1
