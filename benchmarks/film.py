"""Benchmark: what a frame of the film of the cells through training costs, part by part.

A film (``jacreg.cells.film``) computes one cross section per snapshot of each run: the
boundary-refined map, the measured circle (the in-plane boundary search) and the linearised circle
(the Jacobian's prediction). For every snapshot of the given runs and a random plane through each
of a few test digits, this script times the three parts of one ``cross_section`` call from its
progress events, repeats everything (``--repeats``), and prints the median seconds per frame of
each part and the model evaluations of the map, and what loading a snapshot costs.

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
from jacreg.cells import cross_section, random_plane  # noqa: E402
from jacreg.checkpoints import load_checkpoint  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402
from jacreg.training import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("map", "measured circle", "linearised circle", "whole frame")


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
    snaps = [s for q in paths for s in list_snapshots(q)]
    models = [load_checkpoint(s.path)[0] for s in snaps]
    x, _ = load_dataset("mnist-5k", split="test", limit=args.samples)
    print(f"{len(paths)} runs, {len(models)} snapshots, {args.samples} digits, random planes, extent "
          f"{args.extent:g}, {args.resolution}x{args.resolution}, {args.threads} thread(s), {args.repeats} "
          "repeats", file=sys.stderr)
    seconds: dict[str, list[float]] = {k: [] for k in PARTS}
    evals = []
    for rep in range(args.repeats):
        for k in range(args.samples):
            plane = random_plane(x[k], seed=k)
            for model in models:
                marks: dict[str, float] = {}

                def on_event(ev: dict, marks: dict[str, float] = marks) -> None:
                    key = f"{ev['stage']}-{ev['fraction']:.0f}"
                    marks.setdefault(key, time.perf_counter())

                t0 = time.perf_counter()
                cs = cross_section(model, plane, args.extent, args.resolution, on_event=on_event)
                t1 = time.perf_counter()
                seconds["map"].append(marks["boundary-0"] - t0)
                seconds["measured circle"].append(marks["boundary-1"] - marks["boundary-0"])
                seconds["linearised circle"].append(t1 - marks["boundary-1"])
                seconds["whole frame"].append(t1 - t0)
                evals.append(int(cs.evaluations[0]))
        print(f"  repeat {rep + 1}/{args.repeats} done", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    print("\n| part | median s per frame | share of the median frame |")
    print("|---|---:|---:|")
    for part in PARTS:
        label = f"{part} ({np.mean(evals):.0f} evaluations)" if part == "map" else part
        print(f"| {label} | {med[part]:.3f} | {med[part] / med['whole frame']:.0%} |")
    loads = []
    for s in snaps:
        t0 = time.perf_counter()
        load_checkpoint(s.path)
        loads.append(time.perf_counter() - t0)
    print(f"| loading a snapshot (film() does it per frame) | {statistics.median(loads):.3f} | "
          f"{statistics.median(loads) / med['whole frame']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
