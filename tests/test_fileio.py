"""jacreg.fileio: atomic writes (usual modes, no temp files left by killed writers), strict JSON,
robust JSON lines, and outputs checked before work."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from jacreg.errors import OutputError
from jacreg.fileio import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    check_writable,
    finite_or_none,
    parse_jsonl,
    read_jsonl,
)


def test_files_get_the_usual_mode_not_a_private_temp_files(tmp_path):
    path = atomic_write_bytes(tmp_path / "a.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_writer_killed_mid_write_leaves_a_temp_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "model.safetensors"
    code = textwrap.dedent(f"""
        import time
        from jacreg.fileio import atomic_write
        def slow(tmp):
            open(tmp, "wb").write(b"partial")
            print("writing", flush=True)
            time.sleep(60)
        atomic_write({str(target)!r}, slow)
        """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = list(tmp_path.glob(".model.safetensors.*.tmp"))
    assert len(leftovers) == 1 and not target.exists()  # the old file (none) is intact
    atomic_write_bytes(target, b"complete")
    assert target.read_bytes() == b"complete" and not list(tmp_path.glob("*.tmp"))


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    mine = tmp_path / f".t.json.{os.getpid()}.0123abcd.tmp"
    mine.write_text("in progress")
    atomic_write_json(tmp_path / "t.json", {})
    assert mine.exists()


def test_strict_json_for_every_kind_of_number(tmp_path):
    obj = {"inf": math.inf, "nan": float("nan"), "np": np.float32("inf"), "t": torch.tensor([1.0, math.inf]),
           "nested": [{"x": -math.inf}], "ok": 1.5, "flag": True, "n": None}
    path = atomic_write_json(tmp_path / "r.json", obj)
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert loaded == {"inf": None, "nan": None, "np": None, "t": [1.0, None], "nested": [{"x": None}],
                      "ok": 1.5, "flag": True, "n": None}
    assert finite_or_none((1, math.nan)) == [1, None]


def test_json_lines_skip_garbage_and_partial_lines(tmp_path):
    raw = b'{"a": 1}\n\xff\xfe\n[1]\n' + b"[" * 10_000 + b'\n{"b": 2}\n{"c": '
    assert parse_jsonl(raw) == [{"a": 1}, {"b": 2}]
    path = tmp_path / "e.jsonl"
    path.write_bytes(raw)
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]
    assert read_jsonl(path, offset=raw.index(b"[1]")) == [{"b": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("make", ["folder", "file-in-the-way", "nul"])
def test_outputs_are_checked_before_work(tmp_path, make):
    if make == "folder":
        target: Path | str = tmp_path
    elif make == "file-in-the-way":
        (tmp_path / "f").write_text("")
        target = tmp_path / "f" / "out.json"
    else:
        target = str(tmp_path / "a\0b.json")
    with pytest.raises(OutputError, match="cannot write --json"):
        check_writable(target, "--json")
    with pytest.raises(OutputError):
        atomic_write_json(target, {})
    with pytest.raises(OutputError):
        append_jsonl(target, {})


def test_check_writable_creates_the_folder_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    t0 = time.perf_counter()
    check_writable(target)
    assert (tmp_path / "a" / "b").is_dir() and not any((tmp_path / "a" / "b").iterdir())
    assert time.perf_counter() - t0 < 1
