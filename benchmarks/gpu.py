"""CUDA against CPU on the work a user waits for: JR steps, a big cross section, a PGD curve, an epoch.

One command, under five minutes on a GPU machine; every device at hand is measured with the same
code (the CPU always; ``cuda`` when torch sees one), and the last table gives CPU time / device time.

  JR step, LeNet' / DDNet   median SGD step (batch 100 / 50) with Jacobian regularization (auto estimator,
                            n_proj = 1) and its ratio to the plain step; the exact regularizer too
  section 501x501           ``cells.cross_section`` of LeNet' on a random plane, with its circle
  PGD curve                 ``robustness.curve``: PGD (L-inf 0.05, 0.1, 0.3), 200 test samples, 20 steps
  training epoch            ``training.train``: one epoch of mnist-5k, LeNet' with JR (lambda 0.01)

    python benchmarks/gpu.py [--repeats 5] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from jacreg import cells  # noqa: E402
from jacreg.architectures import create  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402
from jacreg.device import describe  # noqa: E402
from jacreg.regularizer import jacobian_penalty  # noqa: E402
from jacreg.robustness import curve  # noqa: E402
from jacreg.training import TrainConfig, train  # noqa: E402

LAMBDA_JR = 0.01


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _seconds(fn: Callable[[], object], dev: torch.device) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t0


def jr_steps(arch: str, shape: tuple[int, ...], batch: int, dev: torch.device,
             repeats: int) -> dict[str, float]:
    """Median step time (ms) of plain, JR (auto, n_proj 1) and JR exact, interleaved."""
    torch.manual_seed(0)
    net = create(arch).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, *shape, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step(method: str | None) -> None:
        opt.zero_grad(set_to_none=True)
        if method is None:
            loss = F.cross_entropy(net(x), y)
        else:
            n_proj = 0 if method == "exact" else 1
            logits, reg = jacobian_penalty(net, x, n_proj=n_proj, method=method)
            loss = F.cross_entropy(logits, y) + LAMBDA_JR * reg
        loss.backward()
        opt.step()

    variants: dict[str, str | None] = {"plain": None, "jr": "auto", "jr exact": "exact"}
    for method in variants.values():  # warm-up (the method choice, cuDNN autotuning, caches)
        step(method)
        step(method)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, method in variants.items():
            times[name].append(_seconds(lambda m=method: step(m), dev))  # type: ignore[misc]
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def section_seconds(dev: torch.device, resolution: int) -> tuple[float, float]:
    """Seconds of a cross section of LeNet' on a random plane (with its circle), and the radius."""
    torch.manual_seed(0)
    net = create("lenet").to(dev).eval()
    x, _ = load_dataset("mnist-5k", "test", limit=1)
    plane = cells.random_plane(x[0], seed=0)
    cells.cross_section(net, plane, 2.0, 21, device=dev)  # warm-up
    out: list[cells.CrossSection] = []
    t = _seconds(lambda: out.append(cells.cross_section(net, plane, 10.0, resolution, device=dev)), dev)
    return t, float(out[0].boundary_distance[0])


def pgd_seconds(dev: torch.device, samples: int) -> float:
    torch.manual_seed(0)
    net = create("lenet").to(dev).eval()
    x, y = load_dataset("mnist-5k", "test", limit=samples)
    return _seconds(lambda: curve(net, x, y, "pgd", [0.05, 0.1, 0.3], device=dev, steps=20), dev)


def epoch_seconds(dev: torch.device, limit_batches: int | None) -> float:
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(epochs=1, jr=LAMBDA_JR, device=str(dev), eval_samples=100,
                             limit_batches=limit_batches, out=str(Path(folder) / "m.safetensors"))
        return _seconds(lambda: train(config), dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: small grid, few samples, few batches")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    resolution, samples, batches = (101, 50, 5) if args.quick else (501, 200, None)
    repeats = 3 if args.quick else args.repeats
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for dev in devices:
        print(f"# {dev}: {describe(dev)}")
    rows: dict[str, dict[str, float]] = {}
    for dev in devices:
        row: dict[str, float] = {}
        for arch, shape, batch in (("lenet", (1, 28, 28), 100), ("ddnet", (3, 32, 32), 50)):
            ms = jr_steps(arch, shape, batch, dev, repeats)
            row[f"{arch} plain step, batch {batch} (ms)"] = ms["plain"]
            row[f"{arch} JR step / plain"] = ms["jr"] / ms["plain"]
            row[f"{arch} JR exact / plain"] = ms["jr exact"] / ms["plain"]
        seconds, radius = section_seconds(dev, resolution)
        row[f"section {resolution}x{resolution} (s)"] = seconds
        row["section circle radius"] = radius
        row[f"PGD curve, {samples} samples (s)"] = pgd_seconds(dev, samples)
        row["training epoch, JR (s)"] = epoch_seconds(dev, batches)
        rows[str(dev)] = row
        print(f"# {dev} done", flush=True)
    names = list(rows)
    print("\n| measure | " + " | ".join(names) + (" | CPU / CUDA |" if len(names) > 1 else " |"))
    print("|---|" + "---:|" * (len(names) + (len(names) > 1)))
    for key in rows["cpu"]:
        values = [rows[n][key] for n in names]
        cells_text = " | ".join(f"{v:.3g}" for v in values)
        speedup = ""
        if len(names) > 1:
            comparable = "/" not in key and "radius" not in key
            speedup = f" | {values[0] / values[1]:.1f}x" if comparable else " | "
        print(f"| {key} | {cells_text}{speedup} |")


if __name__ == "__main__":
    main()
