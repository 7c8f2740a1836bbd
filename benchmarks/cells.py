"""Benchmark: boundary-refined cross sections against evaluating every grid point.

For several test digits and both kinds of plane (random, adversarial), the full grid and the
refined grid are computed alternately (interleaved, so both see the same machine load), each
``--repeats`` times; the script prints, per resolution, the ratio of the median wall times (and of
the process CPU times, steadier on a shared machine), the label agreement with the full grid, and
the evaluations saved. The boundary search (distance to the nearest other class) is timed
separately: it is not part of the map and costs the same either way.

    python benchmarks/cells.py                        # LeNet' trained here for 2 epochs, CPU
    python benchmarks/cells.py --checkpoint models/lenet-none.safetensors --device cuda \\
        --resolutions 201,501

Not run by the tests (a few minutes on two CPU cores, mostly the full grids).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jacreg import cells  # noqa: E402
from jacreg.architectures import create  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402
from jacreg.device import describe, pick  # noqa: E402


def quick_lenet(epochs: int = 2, seed: int = 0) -> torch.nn.Module:
    """LeNet' trained briefly on mnist-5k with plain SGD (about 95% test accuracy)."""
    torch.manual_seed(seed)
    x, y = load_dataset("mnist-5k", split="train")
    model = create("lenet")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 100):
            idx = perm[i:i + 100]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="default: train a LeNet' here (2 epochs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--resolutions", default="201,501")
    ap.add_argument("--samples", type=int, default=3,
                    help="test digits (each on a random and an adversarial plane)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats at the first resolution")
    ap.add_argument("--random-extent", type=float, default=10.0)
    ap.add_argument("--adversarial-extent", type=float, default=2.0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    device = pick(args.device)
    if args.checkpoint:
        from jacreg.checkpoints import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint, device=str(device))
        name = meta.get("name") or Path(args.checkpoint).stem
    else:
        model, name = quick_lenet().to(device), "LeNet' (2 epochs here)"
    x, y = load_dataset("mnist-5k", limit=args.samples)
    print(f"model: {name}; device: {describe(device)}; torch {torch.__version__}")
    cases = []
    for k in range(args.samples):
        cases.append((f"digit {k} random (extent {args.random_extent:g})",
                      cells.random_plane(x[k], seed=k), args.random_extent))
        cases.append((f"digit {k} adversarial (extent {args.adversarial_extent:g})",
                      cells.adversarial_plane(x[k], int(y[k]), model, None, seed=k), args.adversarial_extent))
    # Warm up (first forward passes allocate and pick kernels).
    cells.cross_section(model, cases[0][1], 1.0, 51, device=device, refine=False, boundary=False)
    resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
    for n_res, res in enumerate(resolutions):
        repeats = args.repeats if n_res == 0 else 1
        use = cases if n_res == 0 else cases[:2]
        print(f"\n{res}x{res}: {len(use)} planes, {repeats} interleaved repeat(s) each")
        print(f"  {'plane':<38} {'full ms':>9} {'refined ms':>10} {'ratio':>7} {'cpu ratio':>9} "
              f"{'agree':>8} {'evals':>7}")
        tot_full, tot_ref, cpu_full, cpu_ref, agrees, fracs = 0.0, 0.0, 0.0, 0.0, [], []
        for label, plane, extent in use:
            t_full, t_ref, c_full, c_ref = [], [], [], []
            full = ref = None
            for _ in range(repeats):
                for refine in (False, True):
                    sync(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    cs = cells.cross_section(model, plane, extent, res, device=device, refine=refine,
                                             boundary=False)
                    sync(device)
                    (t_ref if refine else t_full).append(time.perf_counter() - t0)
                    (c_ref if refine else c_full).append(time.process_time() - c0)
                    if refine:
                        ref = cs
                    else:
                        full = cs
            assert full is not None and ref is not None
            mf, mr = statistics.median(t_full), statistics.median(t_ref)
            cf, cr = statistics.median(c_full), statistics.median(c_ref)
            cpu_full += cf
            cpu_ref += cr
            agree = float((full.labels == ref.labels).mean())
            frac = float(ref.evaluations[0]) / res ** 2
            tot_full += mf
            tot_ref += mr
            agrees.append(agree)
            fracs.append(frac)
            print(f"  {label:<38} {1000 * mf:>9.1f} {1000 * mr:>10.1f} {mr / mf:>7.3f} {cr / cf:>9.3f} "
                  f"{agree:>8.5f} "
                  f"{100 * frac:>6.2f}%")
        print(f"  overall: refined/full time ratio {tot_ref / tot_full:.3f} "
              f"(CPU time {cpu_ref / cpu_full:.3f}) "
              f"(full {1000 * tot_full / len(use):.0f} ms, "
              f"refined {1000 * tot_ref / len(use):.0f} ms per map); "
              f"label agreement min {min(agrees):.5f}, mean {np.mean(agrees):.5f}; "
              f"evaluations {100 * np.mean(fracs):.2f}% of the grid on average "
              f"(max {100 * max(fracs):.2f}%), i.e. {100 * (1 - np.mean(fracs)):.1f}% saved")
    # Boundary search, timed on its own.
    print("\nboundary search (in-plane distance to the nearest other class, 0.5% precision, "
          "up to 4x extent):")
    for label, plane, extent in cases:
        t0 = time.perf_counter()
        d = cells.boundary_distance(model, plane, extent, device=device)
        sync(device)
        print(f"  {label:<38} radius {d:8.4f}   {1000 * (time.perf_counter() - t0):7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
