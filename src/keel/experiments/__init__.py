"""Experiments and rollouts: sticky A/B splits, canary ramps, shadow traffic, guards.

Owns the experiment file model (``spec``), and the pure domain logic over it:
which unit sees which variant (``assign``: a SHA-256 bucket of seed and
unit, candidates' ranges first), the statistics (``stats``: always-valid
sequential tests, the sample-ratio check, fixed-horizon tests), the
controller's verdict at each analysis interval (``decide``: advance, hold,
roll back or complete, with the numbers behind it) and sample sizes
(``sizing``). These modules do no I/O and import only ``spec``, numpy and
each other. The store-facing side — reading a window's metrics, running
experiments' state, the controller loop — lives beside them and may import
``keel.store``, ``keel.errors`` and ``keel.config``; nothing here imports
``keel.api``, ``keel.cli`` or ``keel.pipeline``, which call into it.

Importing this package imports nothing but this file: each name below loads
its module on first use. The functions ``assign`` and ``decide`` share their
modules' names, so import them from the modules
(``from keel.experiments.decide import decide``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel._lazy import lazy_exports

if TYPE_CHECKING:
    from keel.experiments.assign import (
        BUCKETS,
        bucket,
        eligible,
        ranges,
        shares_at,
        unit_id,
    )
    from keel.experiments.decide import Action, Decision, VariantMetrics
    from keel.experiments.sizing import sample_size, sample_size_means
    from keel.experiments.spec import Cohort, Experiment, Guard, Ramp, Shadow, Variant
    from keel.experiments.stats import (
        SRM,
        FixedTest,
        Sequential,
        chance_to_beat,
        mean_ci,
        proportion_ci,
        sequential_mean_vs,
        sequential_means,
        sequential_proportions,
        sequential_quantile,
        srm,
        two_proportion_ztest,
        welch_ttest,
    )

# name -> the module that defines it. To export a name, add it here, to the
# TYPE_CHECKING imports above and to __all__ (a test checks the three agree).
_EXPORTS = {
    # spec: the experiment file
    "Cohort": "keel.experiments.spec",
    "Experiment": "keel.experiments.spec",
    "Guard": "keel.experiments.spec",
    "Ramp": "keel.experiments.spec",
    "Shadow": "keel.experiments.spec",
    "Variant": "keel.experiments.spec",
    # assign
    "BUCKETS": "keel.experiments.assign",
    "bucket": "keel.experiments.assign",
    "eligible": "keel.experiments.assign",
    "ranges": "keel.experiments.assign",
    "shares_at": "keel.experiments.assign",
    "unit_id": "keel.experiments.assign",
    # decide
    "Action": "keel.experiments.decide",
    "Decision": "keel.experiments.decide",
    "VariantMetrics": "keel.experiments.decide",
    # sizing
    "sample_size": "keel.experiments.sizing",
    "sample_size_means": "keel.experiments.sizing",
    # stats
    "SRM": "keel.experiments.stats",
    "FixedTest": "keel.experiments.stats",
    "Sequential": "keel.experiments.stats",
    "chance_to_beat": "keel.experiments.stats",
    "mean_ci": "keel.experiments.stats",
    "proportion_ci": "keel.experiments.stats",
    "sequential_mean_vs": "keel.experiments.stats",
    "sequential_means": "keel.experiments.stats",
    "sequential_proportions": "keel.experiments.stats",
    "sequential_quantile": "keel.experiments.stats",
    "srm": "keel.experiments.stats",
    "two_proportion_ztest": "keel.experiments.stats",
    "welch_ttest": "keel.experiments.stats",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "BUCKETS",
    "SRM",
    "Action",
    "Cohort",
    "Decision",
    "Experiment",
    "FixedTest",
    "Guard",
    "Ramp",
    "Sequential",
    "Shadow",
    "Variant",
    "VariantMetrics",
    "bucket",
    "chance_to_beat",
    "eligible",
    "mean_ci",
    "proportion_ci",
    "ranges",
    "sample_size",
    "sample_size_means",
    "sequential_mean_vs",
    "sequential_means",
    "sequential_proportions",
    "sequential_quantile",
    "shares_at",
    "srm",
    "two_proportion_ztest",
    "unit_id",
    "welch_ttest",
]
