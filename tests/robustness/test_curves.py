"""jacreg.robustness.curves: monotone curves, as strong as foolbox, never touching the model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from jacreg import robustness
from jacreg.data import load_dataset
from jacreg.device import model_device
from jacreg.errors import ConfigError, ShapeError
from jacreg.robustness import curve
from jacreg.robustness import curves as curves_module
from tests.helpers import clean_accuracy

FAST = {  # tiny budgets so the whole file runs in seconds
    "noise": {}, "noise-linf": {}, "fgsm": {}, "pgd": {"steps": 10}, "pgd-l2": {"steps": 10},
    "cw": {"binary_search_steps": 2, "steps": 20}, "deepfool": {"steps": 20}, "fmn": {"steps": 20},
}


@pytest.mark.parametrize("attack", list(FAST))
def test_epsilon_zero_is_clean_accuracy_and_curve_never_rises(model, data, attack):
    x, y = data
    spec = robustness.get_attack(attack)
    grid = [0.0, *spec.default_epsilons[1:4]]
    res = curve(model, x, y, attack, grid, batch_size=16, **FAST[attack])
    clean = clean_accuracy(model, x, y)
    assert res["epsilons"] == grid
    assert res["accuracy"][0] == pytest.approx(clean) == pytest.approx(res["clean_accuracy"])
    assert all(b <= a for a, b in zip(res["accuracy"], res["accuracy"][1:], strict=False)), res["accuracy"]
    assert res["samples"] == len(x) and not res["stopped"] and res["seconds"] > 0
    assert len(res["min_epsilons"]) == len(x)
    # a sample's minimal epsilon and the curve agree: broken at eps <=> min_eps <= eps (fixed grid)
    if spec.kind == "fixed":
        for e, a in zip(res["epsilons"], res["accuracy"], strict=True):
            assert a == pytest.approx(sum(m > e for m in res["min_epsilons"]) / len(x))
    if spec.random:
        assert res["raw_accuracy"] is not None and res["raw_accuracy"][0] == pytest.approx(clean)
        assert all(r >= a - 1e-12 for r, a in zip(res["raw_accuracy"], res["accuracy"], strict=True))
    else:
        assert res["raw_accuracy"] is None


def test_pgd_is_at_least_as_strong_as_a_plain_foolbox_call(model):
    """Same samples, same 40-step L-inf PGD: ours never leaves more samples correct (up to 1 sample of
    random-start noise), although it attacks far fewer samples."""
    fb = robustness.foolbox()
    x, y = load_dataset("mnist-5k", split="test", limit=50)
    eps = [0.0, 0.05, 0.1, 0.15, 0.2]
    torch.manual_seed(1)
    theirs_model = copy.deepcopy(model)  # a plain foolbox call accumulates .grad on the parameters
    _, _, success = fb.attacks.LinfPGD(steps=40)(fb.PyTorchModel(theirs_model, bounds=(0, 1), device="cpu"),
                                                 x, y, epsilons=eps)
    theirs = [int((~s).sum()) / 50 for s in success]
    ours = curve(model, x, y, "pgd", eps, batch_size=50)
    assert ours["params"]["steps"] == 40
    for e, a, b in zip(eps, ours["accuracy"], theirs, strict=True):
        assert a <= b + 1 / 50 + 1e-9, (e, ours["accuracy"], theirs)
    assert ours["accuracy"][2] < ours["accuracy"][0]  # the attack does something
    assert sum(ours["attacked"]) < len(eps) * 50  # and skips what is already decided
    assert ours["gradient_evaluations"] < 0.5 * len(eps) * 50 * 40  # foolbox: every sample, epsilon, step


def test_minimisation_attack_runs_once_per_batch(model, data, monkeypatch):
    x, y = data
    calls = []
    real = curves_module.minimization_attack

    def counting(*args, **kwargs):
        calls.append(len(args[3]))
        return real(*args, **kwargs)

    monkeypatch.setattr(curves_module, "minimization_attack", counting)
    eps = [0.0, 0.5, 1.0, 2.0, 4.0]
    res = curve(model, x, y, "deepfool", eps, batch_size=20, steps=20)
    assert len(calls) == 2  # two batches, one run each, for five epsilons
    finite = [m for m in res["min_epsilons"] if math.isfinite(m)]
    assert finite and res["mean_l2"] is not None and res["mean_l2"] > 0
    for e, a in zip(eps, res["accuracy"], strict=True):  # the curve follows the minimal perturbations
        assert a <= sum(m > e for m in res["min_epsilons"]) / len(x) + 1e-12
    assert res["accuracy"][-1] < res["accuracy"][0]


@pytest.mark.parametrize("eps, match", [
    ([-0.1, 0.1], ">= 0"),
    ([0.0, 1.5], "beyond the input range"),
    ([float("nan")], "finite"),
    ([], "at least one"),
    (["a"], "numbers"),
])
def test_bad_epsilons_are_config_errors(model, data, eps, match):
    x, y = data
    with pytest.raises(ConfigError, match=match):
        curve(model, x, y, "pgd", eps)


def test_l2_range_is_the_diameter_of_the_box(model, data):
    x, y = data
    with pytest.raises(ConfigError, match="diameter"):
        curve(model, x, y, "cw", [0.0, 29.0])  # sqrt(784) = 28


def test_unsorted_epsilons_are_sorted_with_a_note(model, data):
    x, y = data
    res = curve(model, x[:8], y[:8], "fgsm", [0.1, 0.0, 0.05, 0.1])
    assert res["epsilons"] == [0.0, 0.05, 0.1]
    assert any("sorted" in n for n in res["notes"]) and any("duplicate" in n for n in res["notes"])


def test_bad_data_and_parameters(model, data):
    x, y = data
    with pytest.raises(ConfigError, match="no samples"):
        curve(model, x[:0], y[:0], "pgd", [0.1])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        curve(model, x * 2 - 0.5, y, "pgd", [0.1])  # normalised images, not pixels
    with pytest.raises(ConfigError, match="uint8"):
        curve(model, (x * 255).to(torch.uint8), y, "pgd", [0.1])
    with pytest.raises(ShapeError, match="one label per image"):
        curve(model, x, y[:3], "pgd", [0.1])
    with pytest.raises(ShapeError, match="labels must be in"):
        curve(model, x[:4], torch.tensor([0, 1, 2, 11]), "pgd", [0.1])
    with pytest.raises(ConfigError, match="unknown attack"):
        curve(model, x, y, "bim", [0.1])
    with pytest.raises(ConfigError, match="no parameter 'stepz'"):
        curve(model, x, y, "pgd", [0.1], stepz=3)
    with pytest.raises(ConfigError, match="batch_size"):
        curve(model, x, y, "pgd", [0.1], batch_size=0)
    with pytest.raises(ShapeError, match="cannot take images"):
        curve(model, torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), "fgsm", [0.1])


def test_attacks_work_under_no_grad_and_inference_mode(model, data):
    x, y = data
    ref = curve(model, x, y, "pgd", [0.0, 0.1], steps=5, seed=3)
    with torch.no_grad():
        assert curve(model, x, y, "pgd", [0.0, 0.1], steps=5, seed=3)["accuracy"] == ref["accuracy"]
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()  # inference tensors
        assert curve(model, xi, yi, "pgd", [0.0, 0.1], steps=5, seed=3)["accuracy"] == ref["accuracy"]
    assert ref["accuracy"][1] < ref["accuracy"][0]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_model_is_never_changed(model, data):
    x, y = data
    for p in model.parameters():
        p.grad = None
    before = _state(model)
    dev = model_device(model)
    curve(model, x, y, "pgd", [0.1], steps=3)
    assert model_device(model) == dev and not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    # a model in train mode (dropout!) is attacked as an eval-mode copy; the caller's stays in train mode
    model.train()
    try:
        res = curve(model, x, y, "fgsm", [0.0, 0.1])
        assert model.training and any("training mode" in n for n in res["notes"])
        assert res["accuracy"][0] == pytest.approx(clean_accuracy(model.eval(), x, y))
    finally:
        model.eval()


def test_foolbox_gets_the_models_own_device(model, data, monkeypatch):
    """foolbox's PyTorchModel calls model.to(device) and defaults to cuda:0: we pass the model's device."""
    fb = robustness.foolbox()
    seen = []
    real = fb.PyTorchModel

    def spy(m, bounds, device=None, **kw):
        seen.append((device, model_device(m)))
        return real(m, bounds=bounds, device=device, **kw)

    monkeypatch.setattr(fb, "PyTorchModel", spy)
    x, y = data
    curve(model, x[:4], y[:4], "fgsm", [0.1])
    assert seen and all(d == md for d, md in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_other_device_attacks_a_copy(model, data):
    x, y = data
    res = curve(model, x, y, "pgd", [0.0, 0.1], device="cuda", steps=5)
    assert res["device"].startswith("cuda") and model_device(model).type == "cpu"


def test_same_seed_same_curve_and_caller_rng_untouched(model, data):
    x, y = data
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = curve(model, x, y, "noise", [0.0, 2.0, 4.0], seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = curve(model, x, y, "noise", [0.0, 2.0, 4.0], seed=7)
    assert a["accuracy"] == b["accuracy"] and a["raw_accuracy"] == b["raw_accuracy"]


def test_events_and_stop(model, data):
    x, y = data
    events: list[dict] = []
    res = curve(model, x, y, "fgsm", [0.0, 0.1, 0.2], batch_size=10, on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("batch") == 4 and kinds.count("epsilon") == 4 * 3
    batch_events = [e for e in events if e["event"] == "batch"]
    assert [e["done"] for e in batch_events] == [10, 20, 30, 40]
    assert batch_events[-1]["accuracy"] == res["accuracy"]
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)

    # on_event returning False stops after that batch: a valid curve on the samples done
    stopped = curve(model, x, y, "fgsm", [0.0, 0.1], batch_size=10,
                    on_event=lambda e: not (e["event"] == "batch" and e["done"] >= 20))
    assert stopped["stopped"] and stopped["samples"] == 20 and stopped["requested_samples"] == len(x)
    first20 = curve(model, x[:20], y[:20], "fgsm", [0.0, 0.1])
    assert stopped["accuracy"] == first20["accuracy"]

    # should_stop is polled inside the batch too (between PGD chunks)
    polls = []

    def should_stop() -> bool:
        polls.append(1)
        return len(polls) > 3

    res = curve(model, x, y, "pgd", [0.0, 0.1, 0.2], batch_size=40, should_stop=should_stop)
    assert res["stopped"] and res["samples"] == 0 and all(math.isnan(a) for a in res["accuracy"])
    assert robustness.to_jsonable(res)["accuracy"] == [None, None, None]
