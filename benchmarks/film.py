"""Benchmark: what a frame of the film of the cells through training costs, part by part.

A film (``jacreg.cells.film``) computes one cross section per snapshot of each run: the
boundary-refined map, the measured circle (the in-plane boundary search) and the linearised circle
(the Jacobian's prediction). For every snapshot of the given runs this script times, interleaved
(round-robin, rotating the order, so machine load hits them alike):

    map          cross_section(..., boundary=False, predict=False)
    map+circle   cross_section(..., predict=False)
    frame        cross_section(...)            (what the film computes)

and prints the median seconds per frame and the model evaluations of the map, then one whole
``film(...)`` (which also loads each snapshot) with its mean seconds per frame.

    python benchmarks/film.py                      # the zoo's snapshots when present, else trains two
    python benchmarks/film.py --runs runs/a/model.safetensors,runs/b/model.safetensors --threads 1

Not run by the tests (a few minutes on two CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jacreg.catalog import list_snapshots  # noqa: E402
from jacreg.cells import cross_section, film, random_plane, snapshot_runs  # noqa: E402
from jacreg.checkpoints import load_checkpoint  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402
from jacreg.training import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARTS = {"map": {"boundary": False, "predict": False}, "map+circle": {"predict": False}, "frame": {}}


def _train_pair(folder: Path, epochs: int) -> list[Path]:
    outs = []
    for name, jr in (("plain", 0.0), ("jr", 0.01)):
        out = folder / f"{name}.safetensors"
        print(f"training {name} ({epochs} epochs, snapshots every epoch)...", file=sys.stderr)
        train(TrainConfig(epochs=epochs, jr=jr, out=str(out), device="cpu", snapshot_every=1, eval_samples=0))
        outs.append(out)
    return outs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=None, help="comma-separated checkpoints with snapshots "
                                                "(default: models/lenet-none and lenet-jr if they have them)")
    p.add_argument("--epochs", type=int, default=6, help="epochs of the runs trained when none are given")
    p.add_argument("--samples", type=int, default=3, help="test digits (a random plane each)")
    p.add_argument("--extent", type=float, default=5.0)
    p.add_argument("--resolution", type=int, default=101)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.runs:
        paths = [Path(s) for s in args.runs.split(",")]
    else:
        paths = [ROOT / "models" / f"lenet-{n}.safetensors" for n in ("none", "jr")]
        if not all(list_snapshots(q) for q in paths):
            paths = _train_pair(Path(tempfile.mkdtemp(prefix="jacreg-film-")), args.epochs)
    models = [load_checkpoint(s.path)[0] for q in paths for s in list_snapshots(q)]
    x, _ = load_dataset("mnist-5k", split="test", limit=args.samples)
    print(f"{len(paths)} runs, {len(models)} snapshots, {args.samples} digits, random planes, extent "
          f"{args.extent:g}, {args.resolution}x{args.resolution}, {args.threads} thread(s), {args.repeats} "
          "interleaved repeats", file=sys.stderr)
    seconds: dict[str, list[float]] = {k: [] for k in PARTS}
    evals = []
    names = list(PARTS)
    for rep in range(args.repeats):
        for k in range(args.samples):
            plane = random_plane(x[k], seed=k)
            for i, model in enumerate(models):
                shift = (rep + i) % len(names)
                for part in names[shift:] + names[:shift]:
                    t0 = time.perf_counter()
                    cs = cross_section(model, plane, args.extent, args.resolution, **PARTS[part])
                    seconds[part].append(time.perf_counter() - t0)
                    if part == "map":
                        evals.append(int(cs.evaluations[0]))
        print(f"  repeat {rep + 1}/{args.repeats} done", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print("\n| part | median s per frame | share of a frame |")
    print("|---|---:|---:|")
    print(f"| map ({np.mean(evals):.0f} evaluations) | {med['map']:.3f} | {med['map'] / med['frame']:.0%} |")
    circle = med["map+circle"] - med["map"]
    print(f"| measured circle | {circle:.3f} | {circle / med['frame']:.0%} |")
    linear = med["frame"] - med["map+circle"]
    print(f"| linearised circle | {linear:.3f} | {linear / med['frame']:.0%} |")
    print(f"| whole frame | {med['frame']:.3f} | 100% |")
    runs = snapshot_runs({q.stem: q for q in paths})
    movie = film(runs, random_plane(x[0], seed=0), args.extent, args.resolution)
    print(f"\nfilm(...) of {movie.frames} frames (loading each snapshot too): "
          f"{movie.seconds_per_frame():.3f} s per frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
