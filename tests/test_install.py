"""The package installs on its own: ``pip install .`` elsewhere gives a working ``jacreg``, and a
background job started from there runs the installed package, not this source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jacreg installed (without its dependencies, which this environment has) into a fresh folder."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(ROOT)], check=True, timeout=300,
                   env={**os.environ, "PIP_NO_INPUT": "1"})
    assert (site / "jacreg" / "py.typed").is_file()
    main = site / "jacreg" / "__main__.py"  # mark the installed copy: it leaves its path where it runs
    main.write_text('from pathlib import Path\nPath("ran-from").write_text(__file__)\n' + main.read_text())
    return site


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JACREG_")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", GIT_PYTHON_REFRESH="quiet")
    return env


@pytest.mark.slow
def test_installed_command_trains_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    env = _env(installed)
    where = subprocess.run([sys.executable, "-c", "import jacreg; print(jacreg.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed))
    out = tmp_path / "m.safetensors"
    run = subprocess.run([sys.executable, "-m", "jacreg", "train", "--epochs", "1", "--limit-batches", "2",
                          "--eval-samples", "20", "--device", "cpu", "--quiet", "--out", str(out)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert out.is_file()


@pytest.mark.slow
def test_background_job_runs_the_installed_package(installed: Path, tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import jacreg
        from jacreg import jobs
        from jacreg.checkpoints import load_checkpoint
        job = jobs.start_job({"epochs": 1, "limit_batches": 2, "eval_samples": 20, "device": "cpu"},
                             runs_dir="runs", env={"OMP_NUM_THREADS": "1"})
        status = job.wait(timeout=240)
        assert status["state"] == "finished", (status, job.log_tail())
        load_checkpoint(job.checkpoint_path)
        print(jacreg.__file__)
        print(open(job.log_path).read().splitlines()[0])
        """)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(installed), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    package, command = run.stdout.strip().splitlines()[-2:]
    assert package.startswith(str(installed))
    assert command.split()[2:4] == ["-m", "jacreg"]
    # the job's process ran the installed copy's __main__ (marked below), in its own run folder
    marks = list((tmp_path / "runs").glob("*/ran-from"))
    assert len(marks) == 1 and marks[0].read_text().startswith(str(installed))
