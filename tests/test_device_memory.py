"""Batch sizing by free memory."""

import torch
from torch import nn

from jacreg import device, robustness


def test_bytes_per_sample_grows_with_activations():
    small = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    big = nn.Sequential(nn.Flatten(), nn.Linear(16, 4096), nn.ReLU(), nn.Linear(4096, 4))
    x = torch.rand(1, 1, 4, 4)
    assert device.bytes_per_sample(big, x) > 10 * device.bytes_per_sample(small, x)
    assert device.bytes_per_sample(big, x) >= 3 * 4096 * 4 * 2


def test_memory_batch_caps_to_free_memory(monkeypatch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1000), nn.ReLU(), nn.Linear(1000, 3))
    x = torch.rand(1, 1, 4, 4)
    per = device.bytes_per_sample(model, x)
    monkeypatch.setattr(device, "free_memory", lambda _dev: per * 40)
    assert device.memory_batch(model, x, 250, torch.device("cpu")) == 10  # a quarter of 40
    assert device.memory_batch(model, x, 4, torch.device("cpu")) == 4
    monkeypatch.setattr(device, "free_memory", lambda _dev: 1)
    assert device.memory_batch(model, x, 250, torch.device("cpu")) == 1
    monkeypatch.setattr(device, "free_memory", lambda _dev: None)
    assert device.memory_batch(model, x, 250, torch.device("cpu")) == 250


def test_free_memory_on_cpu_is_positive():
    free = device.free_memory(torch.device("cpu"))
    assert free is None or free > 0


def test_curve_lowers_the_batch_and_says_so(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 3))
    x, y = torch.rand(12, 1, 4, 4), torch.randint(0, 3, (12,))
    per = device.bytes_per_sample(model, x[:1])
    monkeypatch.setattr(device, "free_memory", lambda _dev: per * 20)
    res = robustness.curve(model, x, y, "fgsm", [0.0, 0.1], batch_size=50)
    assert res["batch_size"] == 5
    assert any("batch size lowered from 50 to 5" in n for n in res["notes"])
    assert res["samples"] == 12
