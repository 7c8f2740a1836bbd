"""``python -m jacreg reproduce``: the model zoo and the paper's tables and figures."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..events import Event, EventFn
from ..fileio import check_writable
from ..reproduce import DEFAULT_EPOCHS, Options
from ..reproduce import run as run_reproduction
from ..training import MAX_COUNT
from .output import check_outputs, integer, print_json, write_json

NAME = "reproduce"
HELP = "train the zoo and reproduce the paper's tables and figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m jacreg reproduce``."""
    p = parser
    p.add_argument("--zoo", action="store_true",
                   help="train/evaluate only the zoo (models/lenet-*.safetensors) and write models/README.md "
                        "and models/first_view.json (the dashboard's opening view)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny end-to-end run (1 epoch of 2 batches, few samples, small grids)")
    p.add_argument("--dataset", default="mnist-5k",
                   help="mnist-5k (offline default), mnist (full, downloads) or usps (Table 2 only)")
    p.add_argument("--seeds", type=integer(1, 100), default=1,
                   help="train K seeds per setting (error bars: mean ± std)")
    p.add_argument("--epochs", type=integer(1, MAX_COUNT), default=None,
                   help=f"epochs per model (default {DEFAULT_EPOCHS})")
    p.add_argument("--out", default="reproduction", help="output folder (default: reproduction)")
    p.add_argument("--zoo-dir", default=None, help="the zoo folder (default: models/)")
    p.add_argument("--device", default="auto")
    p.add_argument("--samples", type=integer(1, MAX_COUNT), default=None,
                   help="test samples for accuracy, ||J||_F and the robustness curves (default 1000)")
    p.add_argument("--cell-samples", type=integer(1, MAX_COUNT), default=None,
                   help="test samples for the decision-cell statistics (default 100)")
    p.add_argument("--figure-sample", type=integer(0, MAX_COUNT), default=0,
                   help="test sample at the centre of Fig. 1/S2")
    p.add_argument("--workers", type=integer(1, 64), default=None,
                   help="models trained and evaluated at once, each in its own process with its share of the "
                        "CPU threads (default: one per two logical CPUs, at most 4)")
    p.add_argument("--no-fashion", dest="fashion", action="store_false",
                   help="leave out the Fashion-MNIST pair (trained when the data is available)")
    p.add_argument("--retrain", action="store_true", help="train even when a matching checkpoint exists")
    p.add_argument("--reevaluate", action="store_true", help="recompute evaluations stored in the cards")
    p.add_argument("--transfer", default="usps", help="transfer dataset of Table 2 ('none' to skip)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None, metavar="FILE", help="write the result summary as JSON")


def _printer() -> EventFn:
    """Progress lines on stderr."""
    last: dict[str, float] = {"t": 0.0}

    def on_event(ev: Event) -> None:
        kind = ev.get("event")
        now = time.time()
        if kind == "model":
            print(f"[{ev['index'] + 1}/{ev['total']}] {ev['key']} seed {ev['seed']}: {ev['path']}",
                  file=sys.stderr, flush=True)
        elif kind == "reuse":
            print(f"  reusing {ev['path']} (its card matches)", file=sys.stderr, flush=True)
        elif kind == "train":
            print(f"  training: {ev['command']}" + (" (resumed)" if ev.get("resume") else ""),
                  file=sys.stderr, flush=True)
        elif kind == "train-epoch":
            extra = (f", test acc {ev['test_accuracy']:.4f}, ||J||_F {ev['jacobian_norm_mean']:.3f}"
                     if "test_accuracy" in ev else "")
            print(f"  {Path(str(ev.get('path', ''))).name} epoch {ev['epoch']}/{ev['epochs']}: "
                  f"loss {ev['train_loss']:.4f}{extra} ({ev['seconds']:.0f} s)", file=sys.stderr, flush=True)
        elif kind == "note":
            print(f"note: {ev['message']}", file=sys.stderr, flush=True)
        elif kind == "stage":
            print(f"  {ev['stage']} ...", file=sys.stderr, flush=True)
        elif kind == "progress" and (now - last["t"] > 10 or ev["done"] == ev["total"]):
            last["t"] = now
            print(f"  {ev['stage']}: {ev['done']}/{ev['total']}", file=sys.stderr, flush=True)
        elif kind == "done":
            print(f"done in {ev['seconds'] / 60:.1f} min: {ev['path']}", file=sys.stderr, flush=True)

    return on_event


def run(args: argparse.Namespace) -> int:
    """Progress on stderr, a summary on stdout, ``--json``."""
    check_outputs(args, "json")
    check_writable(Path(args.out) / "report.md", "--out")
    opts = Options(dataset=args.dataset, zoo=args.zoo, quick=args.quick, seeds=args.seeds, epochs=args.epochs,
                   out=args.out, zoo_dir=args.zoo_dir, device=args.device, samples=args.samples,
                   cell_samples=args.cell_samples, retrain=args.retrain, reevaluate=args.reevaluate,
                   transfer=args.transfer, data_root=args.data_root, figure_sample=args.figure_sample,
                   fashion=args.fashion, workers=args.workers)
    command = "python -m jacreg reproduce " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "reproduce" else "python -m jacreg reproduce"
    result = run_reproduction(opts, _printer(), command=command.strip())
    write_json(args.json, result)
    print_json({k: v for k, v in result.items() if k in ("out", "readme", "seconds", "table2_note",
                                                         "fashion_note")})
    return 0
