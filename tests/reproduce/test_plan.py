"""jacreg.reproduce.plan: what a reproduction trains, and training on several worker processes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from jacreg import reproduce
from jacreg.reproduce.plan import analyse_runs, train_runs


def test_the_plan_of_the_zoo_and_of_the_reproduction(tmp_path):
    zoo = reproduce.Options(zoo=True, out=str(tmp_path), zoo_dir=str(tmp_path / "zoo"))
    runs = reproduce.plan(zoo, fashion=True)
    assert [(r.key, r.dataset) for r in runs] == [(k, "mnist-5k") for k in reproduce.ZOO] + [
        ("none", "fashion-mnist"), ("jr", "fashion-mnist")]
    assert all(r.seed == 0 and r.cells and Path(r.config.out).parent == tmp_path / "zoo" for r in runs)
    assert {r.epochs for r in runs if r.dataset == "mnist-5k"} == {150}  # 6,000 iterations of 40
    full = reproduce.plan(reproduce.Options(seeds=3, out=str(tmp_path), zoo_dir=str(tmp_path / "zoo")),
                          fashion=False)
    seeds = {k: sorted(r.seed for r in full if r.key == k and r.group == "main") for k in reproduce.TABLE1}
    assert all(s == [0, 1, 2] for s in seeds.values())
    lengths = sorted(r.epochs for r in full if r.key == "none")
    assert lengths == [75, 150, 150, 150, 300]  # the iteration study beside three seeds
    assert len({r.config.out for r in full}) == len(full)  # every run has its own file


def test_workers_train_and_evaluate_in_parallel_and_relay_events(tmp_path):
    opts = reproduce.resolve_options(reproduce.Options(quick=True, out=str(tmp_path), zoo_dir=str(tmp_path),
                                                       workers=2, samples=10, cell_samples=1, device="cpu"))
    runs = [r for r in reproduce.plan(opts, fashion=False) if r.key in ("none", "jr") and r.group == "main"]
    events: list[dict] = []
    trained = train_runs(runs, opts, events.append)
    assert list(trained.values()) == [True, True]
    assert {Path(e["path"]).name for e in events if e["event"] == "train-epoch"} == {
        "lenet-none.safetensors", "lenet-jr.safetensors"}  # from the workers, through the queue
    results = analyse_runs(runs, opts, events.append)
    assert [r["card"]["metrics"]["evaluation"]["samples"] for r in results.values()] == [10, 10]
    again = train_runs(runs, replace(opts, workers=1), events.append)
    assert list(again.values()) == [False, False]  # reused
