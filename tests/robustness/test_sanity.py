"""jacreg.robustness.sanity: the gradient-masking badge and its rules."""

from __future__ import annotations

import torch
from torch import nn

from jacreg import robustness
from jacreg.robustness import masking_probe, sanity_check
from tests.helpers import curve_result


class _Masked(nn.Module):
    """Gradient masking: the logits are a step function of the input (zero gradient everywhere)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.inner(x)
        return nn.functional.one_hot(out.argmax(1), out.shape[1]).float() * 10 + 0 * x.sum()


def test_sanity_badge_flags_gradient_masking(model, data):
    x, y = data
    honest = masking_probe(model, x, y, steps=20)
    assert honest["accuracy"][0] <= 0.1 + robustness.CHANCE_MARGIN
    assert sanity_check(honest) == []
    masked = masking_probe(_Masked(model), x, y, steps=20)
    warnings = sanity_check(dict(masked, model="masked"))
    assert len(warnings) == 1 and "gradient masking" in warnings[0] and warnings[0].startswith("masked:")


def test_sanity_badge_rules():
    assert sanity_check(curve_result("pgd", [0, 0.6], [0.9, 0.05])) == []
    assert "gradient masking" in sanity_check(curve_result("pgd", [0, 0.6], [0.9, 0.4]))[0]
    assert sanity_check(curve_result("pgd", [0, 0.3], [0.9, 0.4])) == []  # no large epsilon: no verdict
    l2 = dict(curve_result("pgd-l2", [0, 15.0], [0.9, 0.5]), input_numel=784)  # half the diameter 28
    assert "gradient masking" in sanity_check(l2)[0]
    assert sanity_check(dict(l2, accuracy=[0.9, 0.0])) == []
    rising = curve_result("noise", [0, 2, 4], [0.9, 0.7, 0.7], raw=[0.9, 0.7, 0.85])
    assert "rises with epsilon" in sanity_check(rising)[0]
    jitter = curve_result("noise", [0, 2, 4], [0.9, 0.7, 0.7], raw=[0.9, 0.7, 0.71])
    assert sanity_check(jitter) == []
    pair = [curve_result("pgd", [0, 0.1], [0.9, 0.6], model="a"),
            curve_result("fgsm", [0, 0.1], [0.9, 0.3], model="a"),
            curve_result("fgsm", [0, 0.1], [0.9, 0.7], model="b")]
    warnings = sanity_check(pair)
    assert len(warnings) == 1 and "PGD is weaker than FGSM" in warnings[0] and warnings[0].startswith("a:")
