"""jacreg.reproduce.reading: Table 1 read back from table1.csv, whatever the file holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from jacreg.reproduce import read_table1, reproduction_dir, table1_display

HEADER = ("dataset,regularizer,model,accuracy,accuracy_std,paper_accuracy,jacobian_norm,jacobian_norm_std,"
          "paper_jacobian_norm,seeds,test_samples\n")


def test_reads_rows_with_and_without_error_bars(tmp_path):
    path = tmp_path / "table1.csv"
    path.write_text(HEADER + "mnist-5k,none,lenet-none,0.972,0.003,0.989,5.65233,0.4,32.9,3,1000\n"
                    "mnist-5k,Jacobian (JR),lenet-jr,0.965,,0.99,1.59054,,1.1,1,1000\n", encoding="utf-8")
    rows = read_table1(path)
    assert [r.regularizer for r in rows] == ["none", "Jacobian (JR)"]
    assert rows[0].accuracy_std == 0.003 and rows[1].accuracy_std is None and rows[0].seeds == 3
    shown = table1_display(rows)
    assert shown[0]["test accuracy"] == "97.2% ± 0.3" and shown[0]["mean ||J||_F"] == "5.65 ± 0.40"
    assert shown[1]["test accuracy"] == "96.5%" and shown[1]["paper: ||J||_F"] == "1.1"
    assert shown[0]["paper: accuracy"] == "98.9%" and shown[0]["dataset"] == "mnist-5k"


def test_reads_the_older_file_without_a_dataset_column(tmp_path):
    path = tmp_path / "table1.csv"
    path.write_text(HEADER.removeprefix("dataset,") + "L2,lenet-l2,0.973,,0.992,5.10695,,4.6,1,1000\n",
                    encoding="utf-8")
    (row,) = read_table1(path)
    assert row.dataset == "" and row.model == "lenet-l2" and "dataset" not in table1_display([row])[0]


@pytest.mark.parametrize("content", [
    None, b"", b"\xff\xfe\x00\x01", b"a,b,c\n1,2,3\n", b"regularizer\nnone\n", b"x" * (2 << 20),
    b'regularizer,accuracy\n"unterminated,0.5\n' + b"y" * 200_000,
])
def test_missing_or_unusable_files_give_no_rows(tmp_path, content):
    path = tmp_path / "table1.csv"
    if content is not None:
        path.write_bytes(content)
    assert read_table1(path) == []
    assert read_table1(tmp_path) == []  # a folder


def test_hostile_values_are_read_as_unknown(tmp_path):
    path = tmp_path / "table1.csv"
    path.write_text(HEADER + "d,none,m,nan,-1,1.5,inf,-2,1e999,0,-3\n"
                    "d,,lenet-x,0.9,,,,,,,\n"
                    + "d,\x1b[31mred\x07" + "z" * 500 + ",m,0.5,,,,,,2.5,\n"
                    + "d,more,m,0.5,,,,,,,\n" * 500, encoding="utf-8")
    rows = read_table1(path)
    assert len(rows) == 199                      # 200 rows read, the one without a regularizer left out
    first = rows[0]
    assert (first.accuracy, first.accuracy_std, first.paper_accuracy, first.jacobian_norm) == (None,) * 4
    assert first.jacobian_norm_std is None and first.paper_jacobian_norm is None and first.seeds is None
    assert rows[1].regularizer.startswith("[31mred") and len(rows[1].regularizer) == 120
    assert rows[1].seeds is None                 # not a whole number
    assert table1_display(rows[:1])[0]["test accuracy"] == "n/a"


def test_reproduction_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JACREG_REPRODUCTION_DIR", str(tmp_path))
    assert reproduction_dir() == tmp_path
    monkeypatch.delenv("JACREG_REPRODUCTION_DIR")
    assert reproduction_dir().name == "reproduction" and isinstance(reproduction_dir(), Path)
