"""Small models for tests: a LeNet' after a few SGD steps on the embedded MNIST subset."""

from __future__ import annotations

import torch
from torch import nn

from jacreg import architectures
from jacreg.data import load_dataset


def quick_lenet(seed: int = 0, samples: int = 4000, epochs: int = 1, shuffle: bool = True) -> nn.Module:
    """LeNet' trained with plain SGD (lr 0.1, momentum 0.9, batch 100) on the first ``samples``
    training digits of mnist-5k; one epoch gives about 90% test accuracy. Returned in eval mode."""
    torch.manual_seed(seed)
    x, y = load_dataset("mnist-5k", split="train", limit=samples)
    net = architectures.create("lenet")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        order = torch.randperm(len(x)) if shuffle else torch.arange(len(x))
        for i in range(0, len(x), 100):
            idx = order[i:i + 100]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return net.eval()
