"""Background job and page computation at once: torch's default threads against jacreg's budget.

A training job (``python -m jacreg train``, one epoch of mnist-5k, as the Train page starts it) runs
while this process draws decision-cell cross sections (as the Cells page does). With torch's default
every process takes all the cores; with ``jacreg.device.thread_budget`` the job and the page share
them. The two configurations alternate, ``--repeats`` times each; the table gives the wall time of
the job and of the page's work, median over the repeats.

    python benchmarks/threads.py [--repeats 3] [--sections 6] [--resolution 101]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from jacreg import cells  # noqa: E402
from jacreg.architectures import create  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402
from jacreg.device import thread_budget  # noqa: E402


def run(budgeted: bool, sections: int, resolution: int, folder: Path) -> tuple[float, float]:
    cores = os.cpu_count() or 1
    job_threads = thread_budget("job") if budgeted else cores
    page_threads = thread_budget("page") if budgeted else cores
    env = {**os.environ, "OMP_NUM_THREADS": str(job_threads), "MKL_NUM_THREADS": str(job_threads)}
    out = folder / f"m-{time.monotonic_ns()}.safetensors"
    t0 = time.perf_counter()
    job = subprocess.Popen([sys.executable, "-m", "jacreg", "train", "--epochs", "1", "--eval-samples", "0",
                            "--device", "cpu", "--quiet", "--out", str(out)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    torch.set_num_threads(page_threads)
    model = create("lenet").eval()
    x, _ = load_dataset("mnist-5k", "test", limit=sections)
    p0 = time.perf_counter()
    for k in range(sections):
        cells.cross_section(model, cells.random_plane(x[k], seed=k), 5.0, resolution, refine=False,
                            boundary=False)
    page = time.perf_counter() - p0
    job.wait()
    return time.perf_counter() - t0, page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", type=int, default=6)
    parser.add_argument("--resolution", type=int, default=101)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"torch default": [], "jacreg budget": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name in times:
                times[name].append(run(name == "jacreg budget", args.sections, args.resolution, Path(tmp)))
    cores = os.cpu_count()
    print(f"{platform.processor() or platform.machine()}, {cores} logical CPUs, torch {torch.__version__}; "
          f"load average before: {os.getloadavg()[0]:.1f}")
    print(f"{'threads':<16} {'job (s)':>9} {'page (s)':>9}   (job: 1 epoch of mnist-5k; page: "
          f"{args.sections} full {args.resolution}x{args.resolution} cross sections)")
    for name, rows in times.items():
        threads = (f"{thread_budget('job')}+{thread_budget('page')}" if name == "jacreg budget"
                   else f"{cores}+{cores}")
        print(f"{name} ({threads}) {statistics.median(r[0] for r in rows):>9.1f} "
              f"{statistics.median(r[1] for r in rows):>9.1f}")


if __name__ == "__main__":
    main()
