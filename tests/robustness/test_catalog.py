"""jacreg.robustness.catalog and export: the attack entries, JSON and CSV."""

from __future__ import annotations

import json
import math

import pytest

from jacreg import robustness
from jacreg.errors import ConfigError
from tests.helpers import curve_result


def test_exports():
    r = curve_result("cw", [0.0, 1.0], [0.9, float("nan")])
    r.update(min_epsilons=[0.5, math.inf], model="m")
    j = robustness.to_jsonable(r)
    assert j["min_epsilons"] == [0.5, None] and j["accuracy"] == [0.9, None]
    json.dumps(j, allow_nan=False)
    rows = robustness.to_csv([r]).strip().splitlines()
    assert rows[0].startswith("model,attack,norm,epsilon,accuracy") and rows[1].startswith("m,cw,l2,0,0.9,")


def test_catalogue_entries():
    for name in robustness.names():
        spec = robustness.get_attack(name)
        assert spec.norm in ("linf", "l2") and spec.kind in ("fixed", "minimization")
        assert spec.build() is not None and spec.default_epsilons[0] == 0.0
    cw = robustness.get_attack("cw").build()
    assert cw.binary_search_steps <= 5 and cw.steps <= 200
    assert robustness.get_attack("PGD-Linf").name == "pgd"
    assert robustness.parse_params(["steps=7", "random_start=false"], robustness.get_attack("pgd")) == {
        "steps": 7, "random_start": False}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        robustness.parse_params(["steps"], robustness.get_attack("pgd"))
