"""Benchmark: what the boundary circle adds to a cross section, on a big model and on a linear one.

ResNet-18 on 3x224x224 inputs (the registry's ``resnet18``, random initialisation, seed 0; images
from the offline ``imagenet-samples``), a random plane through each of ``--samples`` images,
``--resolution`` points per side: the cross section without its circle (``boundary=False``) and
with it are computed alternately, ``--repeats`` times, and the script prints the median wall time
of each, their ratio, and the model evaluations of the map and of the circle. Then a linear model
(softmax regression on mnist-5k digits): the circle of the cross section against the exact
in-plane distance, on ``--linear`` random planes.

    python benchmarks/circle.py                       # ResNet-18 224x224, 31x31, extents 10 and 100
    python benchmarks/circle.py --extents 50 --resolution 51 --threads 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from jacreg import cells  # noqa: E402
from jacreg.architectures import create  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402


def timed(fn):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def big_model(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = create("resnet18", num_classes=1000, input_shape=(3, 224, 224)).eval()
    x, _ = load_dataset("imagenet-samples", "test", limit=args.samples)
    print(f"ResNet-18 3x224x224 (random init), {args.resolution}x{args.resolution}, random planes, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'sample':>6} {'extent':>7} {'map s':>7} {'map+circle s':>13} {'ratio':>6} {'map evals':>10} "
          f"{'circle evals':>13} {'radius':>10}")
    ratios = []
    for extent in args.extents:
        for k in range(args.samples):
            plane = cells.random_plane(x[k], seed=k)
            without, with_circle = [], []
            for _ in range(args.repeats):
                t, plain = timed(lambda p=plane, e=extent: cells.cross_section(
                    model, p, e, args.resolution, boundary=False, predict=False))
                without.append(t)
                t, full = timed(lambda p=plane, e=extent: cells.cross_section(
                    model, p, e, args.resolution, predict=False))
                with_circle.append(t)
            a, b = statistics.median(without), statistics.median(with_circle)
            ratios.append(b / a)
            r = float(full.boundary_distance[0])
            shown = f"{r:.4g}" if math.isfinite(r) else f"> {float(full.boundary_searched[0]):.4g}"
            print(f"{k:>6} {extent:>7g} {a:>7.2f} {b:>13.2f} {b / a:>5.2f}x {int(plain.evaluations[0]):>10,} "
                  f"{int(full.boundary_evaluations[0]):>13,} {shown:>10}")
    print(f"map + circle / map: median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x")


def linear_model(args: argparse.Namespace) -> None:
    x, _ = load_dataset("mnist-5k", "test", limit=args.linear)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 784, generator=g) * 0.05
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    with torch.no_grad():
        model[1].weight.copy_(w)
        model[1].bias.zero_()
    errors = []
    for k in range(args.linear):
        plane = cells.random_plane(x[k], seed=k)
        exact = cells.predicted_distance(model, plane).distance  # exact for an affine model
        cs = cells.cross_section(model, plane, extent=1.5 * exact, resolution=args.resolution, predict=False)
        errors.append(abs(float(cs.boundary_distance[0]) - exact) / exact)
    print(f"linear model, {args.linear} random planes: circle vs exact in-plane distance, relative error "
          f"median {statistics.median(errors):.2%}, max {max(errors):.2%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--extents", type=lambda s: [float(v) for v in s.split(",")], default=[10.0, 100.0])
    ap.add_argument("--resolution", type=int, default=31)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--linear", type=int, default=10, help="random planes for the linear-model check")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    linear_model(args)
    big_model(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
