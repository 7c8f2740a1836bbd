"""Architectures: the paper's parameter counts, normalisation inside the model, registry errors."""

from __future__ import annotations

import pytest
import torch

from jacreg import architectures
from jacreg.errors import ConfigError


def test_lenet_matches_the_paper():
    model = architectures.create("lenet")
    assert architectures.count_parameters(model) == 61_706
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_ddnet_matches_the_paper():
    model = architectures.create("ddnet")
    assert architectures.count_parameters(model) == 1_147_978
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_resnet18_takes_imagenet_size_inputs():
    model = architectures.create("resnet18", num_classes=5, input_shape=(3, 64, 64))
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 5)


def test_normalisation_is_a_buffer_and_split_is_exact():
    model = architectures.create("lenet").eval()
    assert {"mean", "std"} <= set(model.state_dict())
    assert "mean" not in dict(model.named_parameters())
    normalize, body = architectures.split_normalization(model)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(body(normalize(x)), model(x))
    torch.testing.assert_close(normalize(x), (x - 0.1307) / 0.3081)


def test_split_of_a_plain_module_is_identity():
    net = torch.nn.Linear(3, 2)
    normalize, body = architectures.split_normalization(net)
    x = torch.rand(2, 3)
    assert body is net and torch.equal(normalize(x), x)


def test_same_seed_same_initialisation():
    torch.manual_seed(0)
    a = architectures.create("lenet")
    torch.manual_seed(0)
    b = architectures.create("lenet")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_dropout_is_configurable():
    model = architectures.create("lenet", dropout=0.5)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.5, 0.5]


@pytest.mark.parametrize("kwargs, phrase", [
    ({"name": "vgg"}, "unknown architecture"),
    ({"name": "lenet", "dropout": 1.0}, "dropout"),
    ({"name": "lenet", "num_classes": 1}, "num_classes"),
    ({"name": "lenet", "input_shape": (1, 28)}, "input_shape"),
    ({"name": "ddnet", "input_shape": (3, 8, 8)}, "cannot take inputs"),
])
def test_bad_arguments_raise_config_errors(kwargs, phrase):
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=phrase):
        architectures.create(name, **kwargs)
