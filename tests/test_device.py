"""jacreg.device: device names, eval copies that never change the caller's model, thread budgets."""

from __future__ import annotations

import pytest
import torch

from jacreg import architectures
from jacreg.device import eval_copy, pick, thread_budget
from jacreg.errors import ConfigError


def test_eval_copy_only_copies_when_it_must():
    net = architectures.create("lenet").eval()
    same, dev = eval_copy(net)
    assert same is net and dev.type == "cpu"
    frozen, _ = eval_copy(net, frozen=True)
    assert frozen is not net and not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in net.parameters())
    net.train()
    copy, _ = eval_copy(net)
    assert copy is not net and not copy.training and net.training


def test_thread_budget_shares_the_cores(monkeypatch):
    monkeypatch.delenv("JACREG_THREADS", raising=False)
    assert (thread_budget("job", 2), thread_budget("page", 2)) == (1, 1)
    assert (thread_budget("job", 16), thread_budget("page", 16)) == (8, 8)
    assert (thread_budget("job", 1), thread_budget("page", 1)) == (1, 1)
    assert thread_budget("job", 3) + thread_budget("page", 3) == 3
    monkeypatch.setenv("JACREG_THREADS", "4")
    assert thread_budget("job", 2) == thread_budget("page", 2) == 4


def test_pick():
    assert pick("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError):
        pick("gpu:0")
