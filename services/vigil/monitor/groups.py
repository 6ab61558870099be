"""The groups of a fairness attribute: which values of the sensitive attribute are told apart, in which order.

Fairness gaps compare groups of a categorical attribute (a clinic's site, a patient's sex). The monitor counts
them per window in fixed-size per-group arrays (:class:`vigil.kernels.fairness.GroupRates`), and a prediction's
group code is fixed when it is folded — labels join minutes later — so the groups must be known before traffic
arrives, and stay put. Two places can name them:

- the monitor policy's ``fairness.groups`` (declared: auditable, a ``policy.changed`` event, and the only way for
  an attribute the model was not trained on — protected attributes usually are kept out of the features, and the
  trainer's reference profiles are numeric);
- else the version's reference profile, when the attribute is one of its categorical columns (its categories).

Values outside the groups count as "other"; a missing value (null, "") belongs to no group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vigil.kernels.profile import DatasetProfile

#: The name of the last group: every value the groups do not name.
OTHER = "other"


def fairness_groups(
    attribute: str | None, reference: DatasetProfile | None, declared: Sequence[str] | None
) -> npt.NDArray[np.str_] | None:
    """The attribute's groups as a string array (codes are indexes into it; ``len`` is "other"), or None when
    there is no attribute or nothing names its groups (then no fairness figures are kept)."""
    if attribute is None:
        return None
    if declared:
        return np.asarray(list(declared), dtype=np.str_)
    cat = reference.categorical if reference is not None else None
    if cat is None or attribute not in cat.names:
        return None
    categories = cat.categories[cat.names.index(attribute)]
    if categories.dtype.kind != "U":
        return None  # numeric categories: the logged attribute columns are strings
    return np.asarray(categories, dtype=np.str_)


def group_names(groups: npt.NDArray[np.str_]) -> list[str]:
    """Display names of the codes 0..len(groups): the groups, then "other"."""
    return [str(g) for g in groups.tolist()] + [OTHER]
