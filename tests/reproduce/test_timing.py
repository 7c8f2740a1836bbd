"""jacreg.reproduce.timing: the zoo's from-scratch wall time, written and read back without trust."""

from __future__ import annotations

import json

import pytest

from jacreg.reproduce.timing import FROM_SCRATCH, FromScratch, read_from_scratch, write_from_scratch


def test_round_trip(tmp_path):
    path = write_from_scratch(tmp_path, 1848.4, 9, 2, "Linux x86_64, 2 logical CPUs")
    assert path == tmp_path / FROM_SCRATCH
    record = read_from_scratch(tmp_path)
    assert isinstance(record, FromScratch)
    assert (record.seconds, record.models, record.workers) == (1848.4, 9, 2)
    assert record.machine == "Linux x86_64, 2 logical CPUs" and len(record.date) == 10


def test_no_file_reads_as_none(tmp_path):
    assert read_from_scratch(tmp_path) is None
    assert read_from_scratch(tmp_path / "missing") is None


GOOD = {"seconds": 60.0, "models": 9, "workers": 2, "machine": "m", "date": "2026-12-01"}


def _bad(**change) -> bytes:
    return json.dumps({**GOOD, **change}).encode()


@pytest.mark.parametrize("content", [
    b"", b"\xff\xfe not utf-8", b"not json", b"[1, 2]", b"null", _bad(seconds="60"), _bad(seconds=-1),
    b'{"seconds": NaN, "models": 9, "workers": 2}', _bad(seconds=True), _bad(models=0), _bad(workers=10**9),
    _bad(models=2.5), _bad(machine="x" * 10_000), _bad(machine="a\x1b[2Jb"), _bad(date="yesterday"),
    json.dumps({k: v for k, v in GOOD.items() if k != "date"}).encode(),
    b" " * 10_000 + json.dumps(GOOD).encode(),
])
def test_hostile_files_read_as_none(tmp_path, content):
    (tmp_path / FROM_SCRATCH).write_bytes(content)
    assert read_from_scratch(tmp_path) is None


def test_a_directory_in_its_place_reads_as_none(tmp_path):
    (tmp_path / FROM_SCRATCH).mkdir()
    assert read_from_scratch(tmp_path) is None
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / FROM_SCRATCH).write_text(json.dumps(GOOD))
    assert read_from_scratch(tmp_path / "ok") == FromScratch(60.0, 9, 2, "m", "2026-12-01")
