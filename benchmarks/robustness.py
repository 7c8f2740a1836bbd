"""Benchmark: our PGD curve against foolbox's plain call over the same epsilon list; CW curve cost.

    python benchmarks/robustness.py [CKPT ...] [--samples 500] [--repeats 3] [--device cpu]

For each checkpoint (default: the zoo's ``models/lenet-none`` and ``models/lenet-jr``), the runs are
interleaved (foolbox, foolbox on a frozen copy, ours, ours without warm start; repeated) so that
load on a shared machine hits all of them alike. foolbox's plain call is
``LinfPGD()(fmodel, x, y, epsilons=eps)``: it attacks every sample at every epsilon, 40 steps each,
and (as eagerpy calls ``loss.backward()``) also computes gradients of the parameters; "foolbox
frozen" is the same call on a copy with ``requires_grad=False``, its best case. Accuracies are
printed next to the times: ours must never be higher than foolbox's (up to one sample of noise).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import torch  # noqa: E402

from jacreg import robustness  # noqa: E402
from jacreg.checkpoints import load_checkpoint  # noqa: E402
from jacreg.data import load_dataset  # noqa: E402
from jacreg.device import describe, pick  # noqa: E402


def _fmt(acc: list[float]) -> str:
    return " ".join(f"{a:.3f}" for a in acc)


def _foolbox_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float],
                 dev: torch.device) -> tuple[float, list[float]]:
    fb = robustness.foolbox()
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=dev)
    t0 = time.perf_counter()
    _, _, success = fb.attacks.LinfPGD()(fmodel, x, y, epsilons=eps)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, [int((~s).sum()) / len(x) for s in success]


def bench_pgd(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float],
              repeats: int, batch_size: int, dev: torch.device) -> None:
    frozen = copy.deepcopy(model).requires_grad_(False)
    plain = copy.deepcopy(model)  # foolbox accumulates .grad on it
    labels = ("foolbox", "foolbox frozen", "ours", "ours, no warm start")
    times: dict[str, list[float]] = {k: [] for k in labels}
    accs: dict[str, list[float]] = {}
    print(f"\n== {name}: L-inf PGD (40 steps, foolbox defaults), {len(x)} samples, epsilons {eps}")
    print(f"{'run':<22}{'ms':>10}  accuracy per epsilon")
    for rep in range(repeats):
        torch.manual_seed(rep)
        for label in times:
            if label.startswith("foolbox"):
                secs, acc = _foolbox_pgd(plain if label == "foolbox" else frozen, x, y, eps, dev)
            else:
                res = robustness.curve(model, x, y, "pgd", eps, batch_size=batch_size, device=dev, seed=rep,
                                       warm_start=(label == "ours"))
                secs, acc = res["seconds"], res["accuracy"]
                if label == "ours":
                    accs.setdefault("attacked", res["attacked"])
                    accs.setdefault("evals", [res["gradient_evaluations"]])
            times[label].append(secs)
            accs[label] = acc if rep == 0 else accs[label]
            print(f"{label + f' #{rep + 1}':<22}{secs * 1000:>10.0f}  {_fmt(acc)}")
    med = {k: statistics.median(v) for k, v in times.items()}
    print("median ms: " + ", ".join(f"{k} {v * 1000:.0f}" for k, v in med.items()))
    print(f"ratio ours / foolbox        = {med['ours'] / med['foolbox']:.3f}")
    print(f"ratio ours / foolbox frozen = {med['ours'] / med['foolbox frozen']:.3f}")
    print(f"ratio ours (no warm start) / foolbox = {med['ours, no warm start'] / med['foolbox']:.3f}")
    print(f"samples attacked per epsilon (ours, first run): {accs['attacked']} (foolbox: {len(x)} at each)")
    fb_evals = len(x) * len(eps) * 40
    print(f"per-sample gradient evaluations (machine-independent cost): ours {accs['evals'][0]}, "
          f"foolbox {fb_evals}, ratio {accs['evals'][0] / fb_evals:.3f}")
    slack = 1 / len(x) + 1e-9
    weaker = [e for e, a, b in zip(eps, accs["ours"], accs["foolbox"], strict=True) if a > b + slack]
    print("never weaker than foolbox (first run, per epsilon, 1 sample slack): "
          + ("yes" if not weaker else f"NO at epsilons {weaker}"))


def bench_cw(name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float],
             batch_size: int, dev: torch.device) -> None:
    fb = robustness.foolbox()
    spec = robustness.get_attack("cw")
    print(f"\n== {name}: CW L2 curve ({dict(spec.defaults)}), {len(x)} samples, epsilons {eps}")
    res = robustness.curve(model, x, y, "cw", eps, batch_size=batch_size, device=dev)
    print(f"ours:    {res['seconds'] * 1000:>8.0f} ms ({res['seconds'] / len(x) * 1000:.1f} ms/sample)  "
          f"{_fmt(res['accuracy'])}  mean L2 {res['mean_l2']:.3f}  median minimal eps "
          f"{res['median_min_epsilon']:.3f}")
    frozen = copy.deepcopy(model).requires_grad_(False)
    fmodel = fb.PyTorchModel(frozen, bounds=(0, 1), device=dev)
    t0 = time.perf_counter()
    _, _, success = spec.build()(fmodel, x, y, epsilons=eps)
    secs = time.perf_counter() - t0
    acc = [int((~s).sum()) / len(x) for s in success]
    print(f"foolbox: {secs * 1000:>8.0f} ms ({secs / len(x) * 1000:.1f} ms/sample)  {_fmt(acc)}  "
          "(same parameters, one call, frozen copy)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", help="default: models/lenet-none and models/lenet-jr")
    p.add_argument("--dataset", default=None)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--cw-samples", type=int, default=100)
    p.add_argument("--eps", default="0,0.05,0.1,0.15,0.2,0.3")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    ckpts = [Path(c) for c in args.checkpoints] or [ROOT / "models" / f"lenet-{r}.safetensors"
                                                    for r in ("none", "jr")]
    ckpts = [c for c in ckpts if c.is_file()]
    if not ckpts:
        print("no checkpoints: pass paths, or train the zoo (python -m jacreg reproduce --zoo)",
              file=sys.stderr)
        return 2
    dev = pick(args.device)
    eps = [float(e) for e in args.eps.split(",")]
    print(f"device {describe(dev)}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for c in ckpts:
        model, meta = load_checkpoint(c, device=str(dev))
        x, y = load_dataset(args.dataset or meta["dataset"], split="test", limit=args.samples)
        metrics = meta.get("metrics") or {}
        name = (f"{meta.get('name') or c.stem} (clean {metrics.get('clean_accuracy', float('nan')):.3f}, "
                f"||J||_F {metrics.get('jacobian_norm_mean', float('nan')):.2f})")
        bench_pgd(name, model, x, y, eps, args.repeats, args.batch_size, dev)
        bench_cw(name, model, x[:args.cw_samples], y[:args.cw_samples], [0, 0.5, 1, 1.5, 2, 3],
                 args.batch_size, dev)
    return 0


if __name__ == "__main__":
    sys.exit(main())
