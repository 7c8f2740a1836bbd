"""jacreg.catalog: where models and their per-epoch snapshots are found."""

from __future__ import annotations

from pathlib import Path

from jacreg import catalog
from jacreg.catalog import Snapshot, list_snapshots, snapshot_dir, snapshot_path


def test_snapshot_paths():
    assert snapshot_dir("runs/a/model.safetensors") == Path("runs/a/model.epochs")
    assert snapshot_dir(Path("models/lenet-jr.safetensors")) == Path("models/lenet-jr.epochs")
    assert snapshot_path("models/x.safetensors", 7) == Path("models/x.epochs/epoch-007.safetensors")
    assert snapshot_path("models/x.safetensors", 1234).name == "epoch-1234.safetensors"


def test_list_snapshots_by_epoch_ignoring_other_files(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    assert list_snapshots(ckpt) == []                       # no folder
    folder = snapshot_dir(ckpt)
    folder.mkdir()
    for name in ("epoch-010.safetensors", "epoch-002.safetensors", "epoch-2.safetensors", "notes.txt",
                 "epoch-003.safetensors.tmp"):
        (folder / name).write_bytes(b"x")
    (folder / "epoch-004.safetensors").mkdir()              # not a file
    expected = [Snapshot(2, folder / "epoch-002.safetensors"), Snapshot(10, folder / "epoch-010.safetensors")]
    assert list_snapshots(ckpt) == expected
    assert list_snapshots(folder) == expected                 # the folder itself works too


def test_entries_say_which_have_snapshots(snapshot_pair, tmp_path):
    entries = {e.name: e for e in catalog.list_models(zoo_dir=snapshot_pair, run_dir=tmp_path / "none")}
    assert set(entries) == {"lenet-none", "lenet-jr"}           # snapshots are not listed as models
    assert all(e.has_snapshots for e in entries.values())
    assert [s.epoch for s in entries["lenet-jr"].snapshots] == [1, 2, 3]
    upload = catalog.ModelEntry("upload:abc", "u", "upload", None)
    assert upload.snapshots == [] and not upload.has_snapshots
