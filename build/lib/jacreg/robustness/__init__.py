"""Robustness curves: accuracy against perturbation size, over a whole dataset, from foolbox attacks.

The paper's Fig. 3 (Hoffman, Roberts & Yaida 2019, Sec. 4.2) for any model. Every attack is a
foolbox 3.3.4 attack (Rauber et al.); this package adds what a dataset-level curve needs:

* :mod:`~jacreg.robustness.catalog`: the attacks, their norms and defaults, checked epsilons;
* :mod:`~jacreg.robustness.curves`: monotone curves that attack only the samples still correct;
* :mod:`~jacreg.robustness.sanity`: the gradient-masking badge;
* :mod:`~jacreg.robustness.minimal`: the full-space distance to the nearest adversarial example;
* :mod:`~jacreg.robustness.runner`: curves in a background thread for interactive front ends;
* :mod:`~jacreg.robustness.export`: strict JSON and CSV.
"""

from __future__ import annotations

from .catalog import (
    ALIASES,
    ATTACKS,
    BOUNDS,
    GRID_LABELS,
    AttackSpec,
    Kind,
    Norm,
    check_epsilons,
    default_grids,
    foolbox,
    get_attack,
    grid_key,
    names,
    parse_params,
)
from .curves import DEFAULT_BATCH_SIZE, check_data, curve, masking_probe
from .export import to_csv, to_jsonable
from .minimal import minimal_adversarial_distance
from .runner import CurveRunner, CurveTask
from .sanity import CHANCE_MARGIN, LARGE_LINF_EPS, sanity_check

__all__ = [
    "ALIASES",
    "ATTACKS",
    "BOUNDS",
    "CHANCE_MARGIN",
    "DEFAULT_BATCH_SIZE",
    "GRID_LABELS",
    "LARGE_LINF_EPS",
    "AttackSpec",
    "CurveRunner",
    "CurveTask",
    "Kind",
    "Norm",
    "check_data",
    "check_epsilons",
    "curve",
    "default_grids",
    "foolbox",
    "get_attack",
    "grid_key",
    "masking_probe",
    "minimal_adversarial_distance",
    "names",
    "parse_params",
    "sanity_check",
    "to_csv",
    "to_jsonable",
]
