"""The paper, reproduced: the model zoo, Table 1/2, Fig. 1/2/3/S1/S2 and decision-cell statistics.

``python -m jacreg reproduce`` trains (or reuses) LeNet' models with the paper's settings
(:mod:`~jacreg.reproduce.settings`) with :func:`jacreg.training.train`, evaluates them
(:mod:`~jacreg.reproduce.zoo`: clean accuracy, ||J||_F, white noise, FGSM, PGD, cell radii; stored in
each model card) and writes the tables and figures (:mod:`~jacreg.reproduce.report`):

* ``table1.csv``/``table1.md``: clean accuracy and mean ||J||_F per regularizer beside the paper's;
* ``fig2.png``/``fig2.csv``: test accuracy and ||J||_F during training, exact vs n_proj = 1 and 3;
* ``fig3.png``/``fig3.csv``: accuracy against white noise, FGSM and PGD iterations;
* ``fig1_random.png``, ``fig_s2_adversarial.png``: cross sections (Fig. 1, S1, S2);
* ``cells.csv``/``cells.md``: in-plane distance to the nearest decision boundary over test samples;
* ``table2.csv``/``table2.md`` when USPS can be loaded (MNIST -> USPS transfer);
* ``report.md`` tying them together.

``--zoo`` trains only the zoo (``models/lenet-*.safetensors``), evaluates every model and writes
``models/README.md`` and ``models/first_view.json`` (the dashboard's opening view,
:mod:`~jacreg.reproduce.first_view`). :mod:`~jacreg.reproduce.reading` reads Table 1 back for the
dashboard.
"""

from __future__ import annotations

from .driver import resolve_options, run
from .first_view import choose_first_view, first_view_caption, radius_ratio, write_first_view
from .plan import Run, plan
from .reading import Table1Row, read_table1, reproduction_dir, table1_display
from .report import machine, zoo_readme
from .settings import (
    CLAIMS,
    DATASET_EPOCHS,
    DEFAULT_EPOCHS,
    FASHION,
    FASHION_KEYS,
    FGSM_EPS_QUOTED,
    FIG1,
    FIG2,
    FIG3,
    ITERATION_EPOCHS,
    ITERATION_KEYS,
    MATCH_KEYS,
    NOISE_SIGMA_QUOTED,
    PAPER_TABLE1,
    PAPER_TABLE2,
    SETTINGS,
    TABLE1,
    TABLE2,
    ZOO,
    EvalSpec,
    Options,
    Setting,
    config_matches,
    quick_spec,
    train_config,
)
from .zoo import analyse, cell_radii, ensure_model, evaluate_model

__all__ = [
    "CLAIMS",
    "DATASET_EPOCHS",
    "DEFAULT_EPOCHS",
    "FASHION",
    "FASHION_KEYS",
    "ITERATION_EPOCHS",
    "ITERATION_KEYS",
    "FGSM_EPS_QUOTED",
    "FIG1",
    "FIG2",
    "FIG3",
    "MATCH_KEYS",
    "NOISE_SIGMA_QUOTED",
    "PAPER_TABLE1",
    "PAPER_TABLE2",
    "Run",
    "SETTINGS",
    "TABLE1",
    "TABLE2",
    "ZOO",
    "EvalSpec",
    "Options",
    "Setting",
    "Table1Row",
    "analyse",
    "cell_radii",
    "choose_first_view",
    "config_matches",
    "ensure_model",
    "evaluate_model",
    "first_view_caption",
    "machine",
    "plan",
    "quick_spec",
    "radius_ratio",
    "read_table1",
    "reproduction_dir",
    "resolve_options",
    "run",
    "table1_display",
    "train_config",
    "write_first_view",
    "zoo_readme",
]
