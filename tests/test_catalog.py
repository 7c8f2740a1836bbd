"""jacreg.catalog: where models and their per-epoch snapshots are found."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def _zoo_with_view(tmp_path: Path, view: object, raw: bytes | None = None) -> Path:
    """A zoo folder with two (empty) checkpoint files and ``first_view.json``."""
    import json

    for name in ("lenet-none", "lenet-jr"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"x")
    (tmp_path / catalog.FIRST_VIEW_FILE).write_bytes(raw if raw is not None else json.dumps(view).encode())
    return tmp_path


GOOD_VIEW = {"models": ["lenet-none", "lenet-jr"], "sample": 31, "plane": "adversarial", "extent": 1.1,
             "radii": {"lenet-none": 0.18, "lenet-jr": 0.74}, "dataset": "mnist-5k"}


def test_first_view_reads_a_good_file(tmp_path):
    view = catalog.first_view(_zoo_with_view(tmp_path, GOOD_VIEW))
    assert view == GOOD_VIEW
    assert catalog.first_view(tmp_path / "nowhere") is None                     # missing folder
    (tmp_path / catalog.FIRST_VIEW_FILE).unlink()
    assert catalog.first_view(tmp_path) is None                                  # missing file


@pytest.mark.parametrize("change", [
    {"models": ["lenet-none"]}, {"models": ["lenet-none", "lenet-none"]}, {"models": "lenet-none,lenet-jr"},
    {"models": ["lenet-none", "lenet-unknown"]}, {"models": ["../lenet-none", "lenet-jr"]},
    {"models": ["lenet-none", 7]}, {"sample": -1}, {"sample": 10**12}, {"sample": 3.5}, {"sample": True},
    {"sample": "3"}, {"plane": "samples"}, {"plane": None}, {"extent": -1.0}, {"extent": 0},
    {"extent": "1.5"}, {"extent": None}, {"extent": True},
])
def test_first_view_refuses_hostile_fields(tmp_path, change):
    assert catalog.first_view(_zoo_with_view(tmp_path, {**GOOD_VIEW, **change})) is None


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe\x00", b"[1, 2]", b"null", b'{"extent": NaN}',
                                 b'{"extent": Infinity}', b"[" * 100_000, b" " * (70 << 10) + b"{}",
                                 b'{"sample": 1' + b"0" * 5000 + b"}"])
def test_first_view_refuses_unreadable_files(tmp_path, raw):
    assert catalog.first_view(_zoo_with_view(tmp_path, None, raw=raw)) is None


def test_first_view_nan_extent_and_odd_radii(tmp_path):
    raw = (b'{"models": ["lenet-none", "lenet-jr"], "sample": 0, "plane": "random", "extent": NaN, '
           b'"radii": {}}')
    assert catalog.first_view(_zoo_with_view(tmp_path, None, raw=raw)) is None
    view = catalog.first_view(_zoo_with_view(tmp_path, {**GOOD_VIEW, "extent": 1e300, "dataset": "a/b\n",
                                                        "radii": {"lenet-none": None, "lenet-jr": -2,
                                                                  "other": 1.0}}))
    assert view is not None
    assert view["extent"] == 1e300            # the page clamps it to the largest extent it draws
    assert view["radii"] == {"lenet-none": None} and view["dataset"] is None
