"""Curves computed at once in several threads (several users of the app) equal the same curves
computed alone: each curve draws its random starts and noise from its own generator."""

from __future__ import annotations

import threading

import torch

from jacreg.robustness import curve


def test_concurrent_curves_equal_solo_ones(model, data):
    x, y = data
    x, y = x[:20], y[:20]
    jobs = [("pgd", [0.0, 0.05, 0.1], {"steps": 4}), ("noise", [0.0, 2.0, 4.0], {}),
            ("pgd-l2", [0.0, 1.0, 2.0], {"steps": 4})]
    key = {"noise": "raw_accuracy"}  # the noise curve's raw accuracy shows each draw
    solo = [curve(model, x, y, a, e, batch_size=10, seed=3, **kw)[key.get(a, "accuracy")]
            for a, e, kw in jobs]
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    results: dict[int, list[float]] = {}

    def work(i: int) -> None:
        a, e, kw = jobs[i % len(jobs)]
        r = curve(model, x, y, a, e, batch_size=10, seed=3, **kw)
        results[i] = r[key.get(a, "accuracy")]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2 * len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(results) == list(range(2 * len(jobs)))
    for i, acc in results.items():
        assert acc == solo[i % len(jobs)], (jobs[i % len(jobs)][0], acc, solo[i % len(jobs)])
    assert torch.equal(torch.get_rng_state(), global_state)  # torch's own generator is left alone
