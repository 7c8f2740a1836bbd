"""python -m jacreg train and eval: the options mirror TrainConfig; the end-to-end path on real data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jacreg.training import TrainConfig


def test_config_round_trips_through_argv():
    from jacreg.cli import build_parser

    config = TrainConfig(jr=0.01, l2=5e-4, dropout=0.5, adv="pgd", resume=True, limit_batches=4)
    args = build_parser().parse_args(["train", *config.to_argv()])
    again = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    assert again == config


@pytest.mark.slow
def test_jacobian_regularization_shrinks_the_jacobian_on_real_data(tmp_path):
    """The end-to-end path of the engine on real MNIST digits (the embedded subset)."""
    from jacreg.cli import main

    results = {}
    for name, extra in (("plain", []), ("jr", ["--jr", "0.01"])):
        out, js = tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json"
        assert main(["train", "--arch", "lenet", "--dataset", "mnist-5k", "--epochs", "3", "--device", "cpu",
                     "--out", str(out), "--quiet", *extra]) == 0
        assert main(["eval", str(out), "--dataset", "mnist-5k", "--device", "cpu", "--json", str(js)]) == 0
        results[name] = json.loads(js.read_text())
    assert results["plain"]["samples"] == results["jr"]["samples"] == 1000
    assert results["plain"]["clean_accuracy"] > 0.9 and results["jr"]["clean_accuracy"] > 0.9
    # After 120 steps the plain ||J||_F is still small (it grows with training, to ~33 in the paper);
    # JR already holds it well below: measured 2.19 vs 4.11 (0.53x) on this path.
    assert results["jr"]["jacobian_norm_mean"] < 0.65 * results["plain"]["jacobian_norm_mean"]


def test_snapshot_every_epoch_leaves_loadable_snapshots_with_different_weights(tmp_path, capsys):
    import torch

    from jacreg.catalog import list_snapshots
    from jacreg.checkpoints import load_checkpoint
    from jacreg.cli import main

    out = tmp_path / "run" / "lenet.safetensors"
    assert main(["train", "--epochs", "3", "--snapshot-every", "1", "--limit-batches", "3",
                 "--batch-size", "50", "--eval-samples", "0", "--device", "cpu", "--out", str(out),
                 "--quiet"]) == 0
    snaps = list_snapshots(out)
    assert [s.epoch for s in snaps] == [1, 2, 3]
    assert [s.path.name for s in snaps] == ["epoch-001.safetensors", "epoch-002.safetensors",
                                            "epoch-003.safetensors"]
    assert snaps[0].path.parent == tmp_path / "run" / "lenet.epochs"
    loaded = [load_checkpoint(s.path) for s in snaps]
    assert [meta["epoch"] for _, meta in loaded] == [1, 2, 3]
    assert [meta["metrics"]["epoch"] for _, meta in loaded] == [1, 2, 3]
    weights = [torch.cat([p.flatten() for p in m.parameters()]) for m, _ in loaded]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    final, _ = load_checkpoint(out)
    assert torch.equal(torch.cat([p.flatten() for p in final.parameters()]), weights[2])
