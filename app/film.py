"""The Cells page's film: the decision cell of one sample through training, several runs side by side.

Widgets and figures only: the film comes from :func:`jacreg.cells.film`, its figures from
:mod:`jacreg.figures.film`. Runs qualify when they have per-epoch snapshots
(``train --snapshot-every N``; :attr:`jacreg.catalog.ModelEntry.snapshots`).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from typing import Any

import streamlit as st
import torch

from app import common
from jacreg import cells
from jacreg.catalog import ModelEntry
from jacreg.cells.film import Film, film
from jacreg.checkpoints import load_checkpoint
from jacreg.errors import ConfigError, JacregError
from jacreg.figures import film as film_figures

K = "film_"                       # widget and session key prefix
ZOO_PAIR = ("zoo:lenet-none", "zoo:lenet-jr")
DEFAULT_RES = 81
HOWTO = ("Train with snapshots to make a film: on the Train page they are on by default for small models "
         "(Advanced → snapshot every N epochs), or `python -m jacreg train ... --snapshot-every 1` writes "
         "`<out stem>.epochs/epoch-NNN.safetensors`. The zoo's films appear once `models/<name>.epochs/` "
         "exists.")


def _stamp(entry: ModelEntry) -> str:
    snaps = entry.snapshots
    newest = max((s.path.stat().st_mtime for s in snaps), default=0.0)
    return f"{entry.key}@{len(snaps)}@{newest}"


@st.cache_data(show_spinner=False, max_entries=8)
def _film(stamps: tuple[str, ...], dataset: str, spec: tuple[tuple[str, Any], ...], extent: float, res: int,
          _runs: dict[str, list[tuple[int, str]]], _x: torch.Tensor, _y: torch.Tensor) -> Film:
    """The film of the runs (hashed by their stamps) on the page's plane; progress while it runs."""
    bar = st.progress(0.0, text="Computing the film...")

    def on_event(ev: dict[str, Any]) -> None:
        bar.progress(float(ev["fraction"]), text=f"Film: {ev['run']}, epoch {ev['epoch']} "
                                                 f"({ev['done']}/{ev['total']} frames)")

    plane = _plane(dict(spec), _runs, _x, _y)
    out = film(_runs, plane, extent, res, on_event=on_event)
    bar.empty()
    return out


def _plane(spec: dict[str, Any], runs: dict[str, list[tuple[int, str]]], x: torch.Tensor,
           y: torch.Tensor) -> cells.Plane:
    """The page's plane; an adversarial one from the FGSM directions of the first two runs' last
    snapshots (the trained models), as the command line does."""
    i = spec["sample"]
    if spec["plane"] == "random":
        return cells.random_plane(x[i], seed=spec["seed"])
    if spec["plane"] == "samples":
        j, k = spec["through"]
        return cells.sample_plane(x[i], x[j], x[k])
    finals = [load_checkpoint(frames[-1][1])[0] for frames in list(runs.values())[:2]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cells.adversarial_plane(x[i], int(y[i]), finals[0], finals[1] if len(finals) > 1 else None,
                                       seed=spec["seed"])


def _defaults(selected: list[ModelEntry], candidates: list[ModelEntry]) -> list[str]:
    keys = [e.key for e in candidates]
    chosen = [e.key for e in selected if e.key in keys]
    if chosen:
        return chosen
    pair = [k for k in ZOO_PAIR if k in keys]
    return pair or keys[:2]


def _radii_csv(movie: Film) -> bytes:
    buf = io.StringIO()
    rows = movie.radii()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def _fmt(r: float) -> str:
    return f"{r:.4g}" if math.isfinite(r) else "none found"


def section(selected: list[ModelEntry], dataset: str, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any],
            extent: float, class_names: list[str] | None) -> None:
    """The film section: pick runs with snapshots, make the film on the page's plane, play it."""
    st.subheader("Cells through training")
    st.caption("The same sample and plane at every saved epoch of each run: watch the cell form. Solid "
               "circle: measured distance to the nearest other class; dashed: the distance the Jacobian "
               "predicts (the logits linearised at the sample). Press ▶ Play or drag the epoch slider.")
    candidates = [e for e in common.entries() if e.has_snapshots
                  and (e.meta.get("dataset") in (None, dataset))]
    if not candidates:
        st.info(f"No run of {dataset} has per-epoch snapshots yet. {HOWTO}")
        return
    labels = {e.key: f"{e.label}, {len(e.snapshots)} snapshots" for e in candidates}
    kept = st.session_state.get(K + "runs")
    if kept is None or any(k not in labels for k in kept):
        st.session_state[K + "runs"] = _defaults(selected, candidates)
    c1, c2, c3 = st.columns([4, 1, 1], vertical_alignment="bottom")
    keys = c1.multiselect("Runs with snapshots", list(labels), format_func=labels.get, key=K + "runs",
                          help="Runs trained with snapshots (Train page, or train --snapshot-every N), "
                               "side by side, e.g. a plain and a JR model trained together.")
    st.session_state.setdefault(K + "res", DEFAULT_RES)
    res = int(c2.number_input("Resolution", step=10, format="%d", key=K + "res",
                              help="Points per side of each frame's map (cost grows with it)."))
    go = c3.button("Make the film", key=K + "go", type="primary", icon=":material/movie:")
    if not keys:
        st.info("Pick one or more runs.")
        return
    try:
        cells.check_grid(extent, res)
    except ConfigError as exc:
        common.show_error(exc)
        return
    chosen = [next(e for e in candidates if e.key == k) for k in keys]
    names = [e.name for e in chosen]
    if len(set(names)) < len(names):
        names = [e.label for e in chosen]
    runs = {n: [(s.epoch, str(s.path)) for s in e.snapshots] for n, e in zip(names, chosen, strict=True)}
    args = (tuple(_stamp(e) for e in chosen), dataset, tuple(sorted(spec.items())), float(extent), res)
    if go:
        st.session_state[K + "args"] = args
    if st.session_state.get(K + "args") != args:
        st.caption(f"{sum(len(v) for v in runs.values())} frames at {res}x{res}; press **Make the film**.")
        return
    try:
        movie = _film(*args, runs, x, y)
    except JacregError as exc:
        common.show_error(exc)
        return
    if movie.plane.note:
        st.info(f"Plane: {movie.plane.note}")
    st.plotly_chart(film_figures.film_figure(movie, class_names, height=440 if len(runs) > 2 else 500),
                    key=K + "chart", theme=None)
    st.plotly_chart(film_figures.radius_figure(movie), key=K + "radius", theme=None)
    st.dataframe([{"run": r["run"], "epoch": r["epoch"], "radius": _fmt(r["radius"]),
                   "linearised": _fmt(r["predicted_radius"]), "prediction": r["prediction"],
                   "p": round(r["confidence"], 3), "seconds": round(r["seconds"], 2)} for r in movie.radii()],
                 hide_index=True, key=K + "table")
    st.caption(f"{movie.frames} frames, {movie.seconds_per_frame():.2f} s per frame on average "
               f"(map, measured circle and linearised circle).")
    stem = f"film-{dataset}-{spec['sample']}-{spec['plane']}"
    d1, d2, d3 = st.columns(3)
    d1.download_button("HTML (plays offline)", data=lambda: film_figures.film_html(movie, class_names),
                       file_name=f"{stem}.html", mime="text/html", key=K + "html", on_click="ignore",
                       icon=":material/download:")
    d2.download_button("GIF", data=lambda: film_figures.film_gif(movie, class_names), file_name=f"{stem}.gif",
                       mime="image/gif", key=K + "gif", on_click="ignore", icon=":material/gif:")
    d3.download_button("Radii (CSV)", data=lambda: _radii_csv(movie), file_name=f"{stem}.csv",
                       mime="text/csv", key=K + "csv", on_click="ignore", icon=":material/table:")
