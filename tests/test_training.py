"""jacreg.training: config validation, the schedule, checkpoints, resume, events."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from jacreg.errors import CheckpointError, ConfigError
from jacreg.fileio import read_jsonl
from jacreg.training import TrainConfig, lr_factor, state_path, train


def tiny(tmp_path, **kw) -> TrainConfig:
    base = dict(epochs=1, limit_batches=3, eval_samples=50, batch_size=50, device="cpu",
                out=str(tmp_path / "m.safetensors"), events=str(tmp_path / "events.jsonl"), log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_is_quenched_at_one_and_two_thirds():
    assert [lr_factor(s, 30) for s in (0, 9, 10, 19, 20, 29)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("field, value, phrase", [
    ("epochs", 0, "--epochs"), ("batch_size", 0, "--batch-size"), ("lr", -1.0, "--lr"),
    ("dropout", 1.0, "--dropout"), ("jr", -0.1, "--jr"), ("n_proj", -1, "--n-proj"),
    ("adv", "cw", "--adv"), ("adv_eps", 2.0, "--adv-eps"), ("adv_mix", 1.5, "--adv-mix"),
    ("arch", "vgg", "unknown architecture"), ("dataset", "svhn", "svhn"),
    ("out", "model.pt", ".safetensors"), ("device", "tpu:0", "device"),
    ("dataset", "cifar10-samples", "test images only"), ("epochs", "3", "--epochs must be int"),
    ("lr", float("nan"), "finite"), ("seed", 2**40, "--seed"), ("name", "a\nb", "control"),
    ("epochs", 10**9, "--epochs"), ("n_proj", 5000, "--n-proj"),
])
def test_invalid_configs_are_refused_with_the_option_name(field, value, phrase):
    config = TrainConfig(**{field: value, **({"adv": "fgsm"} if field == "adv_eps" else {})})
    with pytest.raises(ConfigError, match=phrase):
        config.validate()


def test_train_writes_checkpoint_state_and_events(tmp_path):
    from jacreg.checkpoints import load_checkpoint

    config = tiny(tmp_path, jr=0.01, l2=5e-4, dropout=0.5, adv="fgsm", adv_eps=0.1)
    seen = []
    result = train(config, seen.append)
    kinds = [e["event"] for e in read_jsonl(config.events)]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("step") == 3 and kinds.count("epoch") == 1 and "checkpoint" in kinds
    assert [e["event"] for e in seen] == kinds
    epoch = next(e for e in seen if e["event"] == "epoch")
    for key in ("train_loss", "train_ce", "train_jr", "train_accuracy", "test_accuracy",
                "jacobian_norm_mean", "lr", "seconds"):
        assert key in epoch, key
    assert epoch["train_jr"] > 0
    model, meta = load_checkpoint(config.out)
    assert meta["config"]["jr"] == 0.01 and meta["regularizers"] == ["l2", "dropout", "jr", "fgsm-at"]
    assert meta["command"].startswith("python -m jacreg train ")
    chosen = next(e for e in seen if e["event"] == "jr_estimator")
    assert chosen["method"] == "vjp" and meta["jr_estimator"]["method"] == "vjp"  # Algorithm 1 for images
    assert meta["metrics"]["clean_accuracy"] == result["clean_accuracy"]
    assert state_path(config.out).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_after_a_kill_gives_the_same_model(tmp_path):
    from jacreg.checkpoints import load_checkpoint

    ref = tiny(tmp_path / "ref", epochs=2, jr=0.01, dropout=0.5, eval_samples=0)
    train(ref)

    killed = tiny(tmp_path / "killed", epochs=2, jr=0.01, dropout=0.5, eval_samples=0)

    def die_after_first_checkpoint(event):
        if event["event"] == "checkpoint":
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train(killed, die_after_first_checkpoint)
    events = read_jsonl(killed.events)
    assert events[-1]["event"] == "stopped"
    _, meta = load_checkpoint(killed.out)          # the last checkpoint stays loadable
    assert meta["metrics"]["epoch"] == 1

    train(dataclasses.replace(killed, resume=True))
    a, _ = load_checkpoint(ref.out)
    b, _ = load_checkpoint(killed.out)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)


def test_resume_without_state_or_with_another_config_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no saved state"):
        train(tiny(tmp_path, resume=True))
    train(tiny(tmp_path, eval_samples=0))
    with pytest.raises(ConfigError, match="different config"):
        train(tiny(tmp_path, resume=True, jr=0.5, eval_samples=0))


def test_diverging_loss_is_reported(tmp_path):
    config = tiny(tmp_path, lr=1e38, limit_batches=20, eval_samples=0)
    with pytest.raises(ConfigError, match="lower --lr"):
        train(config)
    assert read_jsonl(config.events)[-1]["event"] == "error"


def test_snapshots_every_n_epochs_and_the_last(tmp_path):
    from jacreg.catalog import list_snapshots, snapshot_path

    config = tiny(tmp_path, epochs=3, snapshot_every=2, eval_samples=0)
    seen = []
    train(config, seen.append)
    assert [s.epoch for s in list_snapshots(config.out)] == [2, 3]      # every 2nd epoch, and the last
    assert [e["epoch"] for e in seen if e["event"] == "snapshot"] == [2, 3]
    # a fresh run to the same --out replaces the old run's snapshots; --resume keeps them
    stale = snapshot_path(config.out, 9)
    stale.write_bytes(b"old")
    train(tiny(tmp_path, epochs=1, eval_samples=0, force=True))
    assert list_snapshots(config.out) == []
    killed = tiny(tmp_path, epochs=3, snapshot_every=1, eval_samples=0, force=True)

    def die_after_first_snapshot(event):
        if event["event"] == "snapshot":
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train(killed, die_after_first_snapshot)
    assert [s.epoch for s in list_snapshots(config.out)] == [1]
    train(dataclasses.replace(killed, resume=True))
    assert [s.epoch for s in list_snapshots(config.out)] == [1, 2, 3]


def test_snapshot_option_is_validated_and_suggested_for_small_models():
    from jacreg.training import suggested_snapshot_every

    with pytest.raises(ConfigError, match="--snapshot-every"):
        TrainConfig(snapshot_every=-1).validate()
    assert "--snapshot-every=2" in TrainConfig(snapshot_every=2).command()
    assert suggested_snapshot_every("lenet", 10) == 1
    assert suggested_snapshot_every("lenet", 10_000) == 0               # 10,000 copies of 247 kB: too many
    assert suggested_snapshot_every("resnet18", 10) == 0                # 11.7 M parameters
    with pytest.raises(ConfigError):
        suggested_snapshot_every("vgg", 10)


def test_an_explicit_estimator_is_recorded_as_chosen(tmp_path):
    from jacreg.checkpoints import load_checkpoint

    config = tiny(tmp_path, jr=0.01, jr_method="jvp", limit_batches=1, eval_samples=0)
    train(config)
    _, meta = load_checkpoint(config.out)
    assert meta["jr_estimator"] == {"method": "jvp", "reason": "--jr-method jvp"}
    plain = tiny(tmp_path, out=str(tmp_path / "p.safetensors"), limit_batches=1, eval_samples=0)
    train(plain)
    assert load_checkpoint(plain.out)[1]["jr_estimator"] is None
