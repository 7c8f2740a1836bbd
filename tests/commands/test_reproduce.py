"""python -m jacreg reproduce: one-line user errors."""

from __future__ import annotations

from jacreg.cli import main


def test_user_errors_exit_2(tmp_path, capsys) -> None:
    assert main(["reproduce", "--quick", "--dataset", "cifar10", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err
