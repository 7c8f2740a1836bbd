"""jacreg.adversarial: FGSM/PGD training examples and the FGSM direction."""

from __future__ import annotations

import pytest
import torch

from jacreg import architectures
from jacreg.adversarial import adversarial_examples


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_adversarial_examples_stay_in_the_ball_and_raise_the_loss(attack):
    torch.manual_seed(0)
    model = architectures.create("lenet").eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    xa = adversarial_examples(model, x, y, attack, eps=0.1, steps=5)
    assert (xa - x).abs().max() <= 0.1 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(xa), y) > ce(model(x), y)
