"""The demo's sensitive attribute: which clinic (``site``) a request comes from — logged, never fed to the model.

The patient-risk model is trained on vitals and labs only; the gateway logs each request's ``site`` beside its
prediction (the deployment's ``logged_attributes``) and the monitor computes fairness gaps between the sites
(the policy's ``fairness.groups``), so the console's fairness view has real figures after the story.

The site is drawn **independently** of the patient: a row's site says nothing about its features or its outcome, so
every version's true gap between sites is zero and what the monitor shows is sampling noise. The story is about
accuracy and drift; a real gap (say, older patients at one clinic) would be a second plot line that could decide a
canary on its own. Sites come from their own random stream (``(seed, 1)``), so the features and outcomes of a seed
are those of :func:`vigil.datasets.patient_risk.generate` unchanged, and the same seed gives the same sites.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The request field the deployment logs and the monitor judges fairness on.
ATTRIBUTE = "site"
#: The clinics and their share of the traffic.
SITES: dict[str, float] = {"riverside": 0.40, "hillcrest": 0.35, "lakeview": 0.25}
#: Stream key that keeps the sites' draws apart from the generator's (which seeds ``default_rng(seed)``).
_STREAM = 1

#: The demo's fairness rule. The thresholds are wide on purpose: the fast story's windows hold ~240 labelled rows
#: per variant (200 at the least, ``min_samples``), ~25 negatives per site, so noise alone puts the equalized odds
#: difference of a version with no true gap at ~0.18 in a typical window — the default 0.2 would fail a fair canary
#: about half the time, and a Failed verdict rolls the canary back whatever ``actions.rollback_on`` says (the
#: deployer acts on the analysis step's verdict). In 400 000 simulated windows of 200 labelled rows (v2 on the
#: clinic's patients, v1 and v3 on the drifted ones) the largest gaps were 0.38 (demographic parity) and 0.86
#: (equalized odds): at 0.5 and 0.9 a breach by chance is below one in a million windows.
FAIRNESS_POLICY: dict[str, Any] = {
    "attribute": ATTRIBUTE,
    "groups": list(SITES),
    "max_demographic_parity_difference": 0.5,
    "max_equalized_odds_difference": 0.9,
    "min_samples": 200,
}


def draw_sites(rows: int, seed: int) -> dict[str, list[str | None]]:
    """The ``site`` column for ``rows`` requests drawn with ``seed`` (deterministic), as logged attributes."""
    rng = np.random.default_rng((seed, _STREAM))
    names = list(SITES)
    picks = rng.choice(len(names), size=rows, p=list(SITES.values()))
    return {ATTRIBUTE: [names[i] for i in picks.tolist()]}
