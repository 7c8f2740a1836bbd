"""Decision cells: the paper's Fig. 1, S1 and S2, live, for the models picked in the sidebar.

Widgets and figures only: planes, cross sections, distances and statistics come from
:mod:`jacreg.cells`, figures from :mod:`jacreg.figures.cells`. The view (models, dataset, sample, plane,
seed, extent, resolution) is kept in the URL's query parameters, so a view can be shared. The film of
the cell through training (runs with per-epoch snapshots) is :mod:`app.film`; the coarse preview shown
first for slow models is :mod:`app.preview`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st
import torch

from app import common, preview
from app.film import section as film_section
from jacreg import cells, data
from jacreg.catalog import ModelEntry
from jacreg.errors import ConfigError, JacregError
from jacreg.figures import cells as plots
from jacreg.figures.style import class_label
from jacreg.parsing import MAX_SEED, parse_through
from jacreg.reproduce import first_view_caption

K = "cells_"                     # widget and session key prefix
PLANES = {"random": "Random (seeded)", "adversarial": "Adversarial (FGSM directions)",
          "samples": "Through three samples"}
RANDOM_DIRECTION = "(random direction)"
GALLERY = 24                     # thumbnails in the sample gallery
TEST_LIMIT = 2000                # test samples loaded for the picker
MAX_SAMPLE = 1_000_000


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not lo <= value <= hi:
            raise ValueError(text)
        return value
    return parse


def _extent(text: str) -> float:
    value = float(text)
    if not 0 < value <= cells.MAX_EXTENT:  # also refuses nan and inf
        raise ValueError(text)
    return value


def _text(text: str) -> str:
    if len(text) > 200 or not text.isprintable():
        raise ValueError(text[:40])
    return text


# URL query parameter -> (session key, parser); a value out of range is ignored with a warning
URL_STATE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "sample": (K + "sample", _int_in(0, MAX_SAMPLE)), "plane": (K + "plane", _text),
    "seed": (K + "seed", _int_in(0, MAX_SEED)), "extent": (K + "extent", _extent),
    "res": (K + "res", _int_in(cells.MIN_RESOLUTION, cells.MAX_RESOLUTION)), "a": (K + "a", _text),
    "b": (K + "b", _text), "through": (K + "through", _text),
}
DEFAULTS: dict[str, Any] = {K + "sample": 0, K + "plane": "random", K + "seed": 0, K + "extent": 5.0,
                            K + "res": 101, K + "through": ""}


# --- state --------------------------------------------------------------------------------------

def _restore() -> None:
    """Widget values for this run: from the URL on the session's first visit, else the values saved
    when the page was last shown (Streamlit drops widget state while another page is shown), else
    the defaults."""
    saved = st.session_state.get(K + "saved", {})
    _read_url()
    for key, value in {**DEFAULTS, **_first_view_defaults(), **saved}.items():
        st.session_state.setdefault(key, value)


def _first_view_defaults() -> dict[str, Any]:
    """Sample, plane and extent of the zoo's first view, when the session opened on it."""
    view = common.first_view()
    if view is None:
        return {}
    return {K + "sample": view["sample"], K + "plane": view["plane"],
            K + "extent": min(max(float(view["extent"]), 1e-3), cells.MAX_EXTENT)}


def _is_first_view(entries: list[ModelEntry], pspec: dict[str, Any]) -> bool:
    """Whether the page shows the first view: its two models, in order, on its plane and sample."""
    view = common.first_view()
    if view is None:
        return False
    keys = [f"zoo:{name}" for name in view["models"]]
    return ([e.key for e in entries] == keys and pspec["sample"] == view["sample"]
            and pspec["plane"] == view["plane"]
            and (view["plane"] != "adversarial" or [pspec.get("a"), pspec.get("b")] == keys))


def _save() -> None:
    st.session_state[K + "saved"] = {key: st.session_state[key] for key, _ in URL_STATE.values()
                                     if key in st.session_state}


def _read_url() -> None:
    """Once per session: widget values from the URL (before the widgets exist)."""
    if st.session_state.get(K + "url_read"):
        return
    st.session_state[K + "url_read"] = True
    bad = []
    for name, (key, parse) in URL_STATE.items():
        if name in st.query_params:
            try:
                st.session_state[key] = parse(st.query_params[name])
            except (ValueError, OverflowError):
                bad.append(f"{name}={str(st.query_params[name])[:40]!r}")
    if K + "plane" in st.session_state and st.session_state[K + "plane"] not in PLANES:
        bad.append(f"plane={st.session_state[K + 'plane']!r}")
        st.session_state[K + "plane"] = "random"
    if bad:
        st.session_state[K + "url_bad"] = bad


def _write_url(entries: list[ModelEntry], dataset: str) -> None:
    """Mirror the current view in the URL (shareable)."""
    state = {name: st.session_state.get(key) for name, (key, _) in URL_STATE.items()}
    plane = state["plane"]
    keep = {"sample", "plane", "extent", "res"} | {"random": {"seed"}, "adversarial": {"a", "b", "seed"},
                                                   "samples": {"through"}}[plane]
    params = {n: str(v) for n, v in state.items() if n in keep and v not in (None, "")}
    params[common.QUERY_MODELS] = ",".join(e.key for e in entries)
    params[common.QUERY_DATASET] = dataset
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)


def _stamp(entry: ModelEntry) -> str:
    """What identifies a checkpoint's content for the caches: its key plus file time or digest."""
    if entry.source == "upload":
        return f"{entry.key}@{common.uploads().get(entry.key, {}).get('digest', '')}"
    mtime = entry.path.stat().st_mtime if entry.path is not None and entry.path.exists() else 0.0
    return f"{entry.key}@{mtime}"


def _set_sample(i: int) -> None:
    st.session_state[K + "sample"] = int(i)


# --- cached computations (models hashed by checkpoint key, never by the module) -----------------

@st.cache_resource(show_spinner="Loading test data...", max_entries=4)
def _test_data(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test samples (shared and read-only: nothing here modifies them)."""
    return data.load_dataset(name, split="test", limit=TEST_LIMIT)


@st.cache_data(show_spinner=False, max_entries=64)
def _predictions(stamps: tuple[str, ...], dataset: str, n: int, _models: list, _x: torch.Tensor
                 ) -> tuple[np.ndarray, np.ndarray]:
    return cells.predict(_models, _x[:n])


def _plane(spec: dict[str, Any], x: torch.Tensor, y: torch.Tensor, models: dict[str, torch.nn.Module]
           ) -> cells.Plane:
    i = spec["sample"]
    if spec["plane"] == "random":
        return cells.random_plane(x[i], seed=spec["seed"])
    if spec["plane"] == "adversarial":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cells.adversarial_plane(x[i], int(y[i]), models[spec["a"]],
                                           models.get(spec["b"]), seed=spec["seed"])
    j, k = spec["through"]
    return cells.sample_plane(x[i], x[j], x[k])


@st.cache_resource(show_spinner=False, max_entries=32)
def _plane_cached(stamps: tuple[str, ...], spec: tuple[tuple[str, Any], ...],
                  _models: dict[str, torch.nn.Module], _x: torch.Tensor, _y: torch.Tensor) -> cells.Plane:
    """The plane of a view (shared and read-only), built once for the preview and the full map."""
    return _plane(dict(spec), _x, _y, _models)


@st.cache_data(show_spinner=False, max_entries=32)
def _cross_section(stamps: tuple[str, ...], spec: tuple[tuple[str, Any], ...], extent: float, res: int,
                   _models: dict[str, torch.nn.Module], _x: torch.Tensor,
                   _y: torch.Tensor) -> cells.CrossSection:
    """One cross section of all models; progress shown while it runs (replayed empty when cached)."""
    bar = st.progress(0.0, text="Computing the cross section...")

    def on_event(ev: dict[str, Any]) -> None:
        m, n = int(ev.get("model", 0)), int(ev.get("models", 1))
        stage = 0.8 * float(ev["fraction"]) if ev["stage"] == "map" else 0.8 + 0.2 * float(ev["fraction"])
        bar.progress(min(1.0, (m + stage) / n), text=f"Model {m + 1}/{n}: "
                     f"{'map' if ev['stage'] == 'map' else 'distance to the boundary'}...")

    plane = _plane_cached(stamps, spec, _models, _x, _y)
    cs = cells.cross_section(list(_models.values()), plane, extent, res, on_event=on_event)
    bar.empty()
    return cs


@st.cache_data(show_spinner="Searching the nearest adversarial example (FMN, L2)...", max_entries=64)
def _min_adversarial(stamps: tuple[str, ...], dataset: str, sample: int, _models: list, _x: torch.Tensor
                     ) -> list[float]:
    return [float(cells.minimal_adversarial_distance(m, _x[sample], attack="fmn")) for m in _models]


@st.cache_data(show_spinner=False, max_entries=16)
def _statistics(stamps: tuple[str, ...], names: tuple[str, ...], dataset: str, n: int, kind: str,
                extent: float, res: int, seed: int, _models: list, _x: torch.Tensor, _y: torch.Tensor
                ) -> list[dict[str, Any]]:
    bar = st.progress(0.0, text=f"Cell statistics on {kind} planes...")

    def on_event(ev: dict[str, Any]) -> None:
        bar.progress(float(ev["fraction"]), text=f"Cell statistics on {kind} planes: "
                                                 f"{ev['done']}/{ev['total']} samples")

    out = cells.cell_statistics(_models, _x[:n], _y[:n], n, kind, extent=extent, resolution=res, seed=seed,
                                names=list(names), on_event=on_event)
    bar.empty()
    return out


# --- page ---------------------------------------------------------------------------------------

def _image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> an image st.image shows (clipped to [0, 1])."""
    a = x.detach().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def _fmt_radius(r: float, searched: float) -> str:
    """The circle's radius; "> R" when no boundary was found within the radius R searched."""
    return cells.radius_label(r, searched, ".4g") or "not searched"


def _fmt_linearised(r: float) -> str:
    """The radius the Jacobian predicts (dashed circle); none when the logits are flat in the plane."""
    return f"{r:.4g}" if math.isfinite(r) else "none"


def main() -> None:
    st.title("Decision cells")
    st.caption("A 2-D slice of input space through one test sample: colour = predicted class, paler "
               "where the top softmax is lower, thin lines = its iso-lines, black circle = in-plane distance "
               "from the sample to the nearest other class. Coordinates are L2 distances in [0, 1] pixel "
               "units; points outside the [0, 1] box are evaluated as they are. (Hoffman, Roberts & Yaida "
               "2019, Fig. 1, S1, S2.)")
    _restore()
    for bad in st.session_state.pop(K + "url_bad", []):
        st.warning(f"Ignored a bad link parameter: {common.md(bad)}")

    entries = common.selected_entries()
    if not entries:
        st.info("Pick one or more models in the sidebar (zoo, trained runs or uploads).")
        return
    try:
        loaded = [common.load_entry(e) for e in entries]
    except JacregError as exc:
        common.show_error(exc)
        return
    models = {e.key: m for e, (m, _) in zip(entries, loaded, strict=True)}
    metas = [meta for _, meta in loaded]
    names = [e.name for e in entries]
    if len(set(names)) < len(names):
        names = [e.label for e in entries]
    shapes = {tuple(m.get("input_shape") or ()) for m in metas} - {()}
    if len(shapes) > 1:
        listing = common.md(", ".join(f"{nm} {tuple(m.get('input_shape') or ())}"
                                      for nm, m in zip(names, metas, strict=True)))
        st.error(f"These models take different input shapes ({listing}): one plane cannot go through "
                 "all of them. Pick models trained on one dataset.")
        return
    dataset = st.session_state.get(common.DATASET) or metas[0].get("dataset") or "mnist-5k"
    try:
        spec = data.dataset_spec(dataset)
    except JacregError as exc:
        common.show_error(exc)
        return
    if shapes and spec.input_shape != next(iter(shapes)):
        theirs = metas[0].get("dataset", "their dataset")
        st.error(common.md(f"The models take {next(iter(shapes))} images but {dataset} has "
                           f"{spec.input_shape}; pick {theirs} in the sidebar."))
        return
    try:
        x, y = _test_data(dataset)
    except JacregError as exc:
        common.show_error(exc)
        return
    n = int(x.shape[0])
    stamps = tuple(_stamp(e) for e in entries)
    class_names = list(spec.class_names) if spec.class_names else None

    # Sample: index, gallery, true label and every model's prediction.
    left, right = st.columns([1, 2], gap="large")
    with left:
        st.subheader("Sample")
        if not 0 <= int(st.session_state[K + "sample"]) < n:
            st.warning(f"Sample {int(st.session_state[K + 'sample'])} does not exist: {dataset} test samples "
                       f"run from 0 to {n - 1}; showing sample 0.")
            st.session_state[K + "sample"] = 0
        st.number_input(f"Test sample index (0..{n - 1})", min_value=0, max_value=n - 1, step=1, format="%d",
                        key=K + "sample")
        sample = int(st.session_state[K + "sample"])
        if not 0 <= sample < n:
            st.error(common.md(f"Sample {sample} does not exist: {dataset} test samples run from 0 to "
                               f"{n - 1}."))
            return
        labels, conf = _predictions(stamps, dataset, min(n, max(GALLERY, sample + 1)),
                                    list(models.values()), x)
        c_img, c_tab = st.columns([1, 2])
        true_label = class_label(int(y[sample]), class_names)
        c_img.image(_image(x[sample]), caption=f"#{sample}: label {true_label}", width=112)
        c_tab.dataframe([{"model": nm, "prediction": class_label(int(labels[m, sample]), class_names),
                          "p": round(float(conf[m, sample]), 3),
                          "correct": bool(labels[m, sample] == int(y[sample]))}
                         for m, nm in enumerate(names)], hide_index=True)
        with st.expander(f"Gallery: the first {GALLERY} test samples"):
            cols = st.columns(6)
            for i in range(min(GALLERY, n)):
                with cols[i % 6]:
                    st.image(_image(x[i]), width=44)
                    right_all = all(labels[m, i] == int(y[i]) for m in range(len(names)))
                    st.button(f"{i}{'' if right_all else ' ✗'}", key=f"{K}pick_{i}", on_click=_set_sample,
                              args=(i,), help=f"label {int(y[i])}; predictions "
                              + ", ".join(f"{nm}: {int(labels[m, i])}" for m, nm in enumerate(names)))
    with right:
        st.subheader("Plane")
        plane_kind = st.radio("Plane", list(PLANES), format_func=PLANES.get, key=K + "plane", horizontal=True,
                              label_visibility="collapsed")
        keys = list(models)
        label_of = dict(zip(keys, names, strict=True))
        c1, c2, c3 = st.columns(3)
        through: tuple[int, int] = (0, 0)
        if plane_kind == "random":
            c1.number_input("Seed", min_value=0, max_value=MAX_SEED, step=1, format="%d", key=K + "seed")
        elif plane_kind == "adversarial":
            if st.session_state.get(K + "a") not in keys:
                st.session_state[K + "a"] = keys[0]
            b_opts = keys + [RANDOM_DIRECTION]
            if st.session_state.get(K + "b") not in b_opts:
                st.session_state[K + "b"] = keys[1] if len(keys) > 1 else RANDOM_DIRECTION
            c1.selectbox("u: FGSM direction of", keys, format_func=label_of.get, key=K + "a")
            c2.selectbox("v: FGSM direction of", b_opts, format_func=lambda k: label_of.get(k, k),
                         key=K + "b")
            c3.number_input("Seed (random completion)", min_value=0, max_value=MAX_SEED, step=1, format="%d",
                            key=K + "seed")
        else:
            c1.text_input("Other two samples (J,K)", key=K + "through",
                          placeholder=f"{(sample + 1) % n},{(sample + 2) % n}",
                          help="The plane through the sample and these two; empty = the next two.")
            try:
                through = parse_through(str(st.session_state[K + "through"]), sample, n, "other samples")
            except ConfigError as exc:
                common.show_error(exc)
                return
        c4, c5 = st.columns(2)
        c4.number_input("Extent: half width (L2 units)", min_value=1e-3, max_value=cells.MAX_EXTENT, step=0.5,
                        format="%.3f", key=K + "extent",
                        help="Random planes: 5-20 shows an MNIST cell; adversarial planes: 1-3. "
                             "A whole MNIST digit has an L2 norm of about 9.")
        c5.number_input(f"Resolution: points per side ({cells.MIN_RESOLUTION}-{cells.MAX_RESOLUTION})",
                        min_value=cells.MIN_RESOLUTION, max_value=cells.MAX_RESOLUTION, step=10, format="%d",
                        key=K + "res")
    extent, res = float(st.session_state[K + "extent"]), int(st.session_state[K + "res"])
    _save()
    _write_url(entries, dataset)
    try:
        cells.check_grid(extent, res)
    except ConfigError as exc:
        common.show_error(exc)
        return
    seed = int(st.session_state.get(K + "seed", 0))
    pspec = {"sample": sample, "plane": plane_kind, "seed": seed}
    if plane_kind == "adversarial":
        pspec.update(a=st.session_state[K + "a"], b=st.session_state[K + "b"])
    if plane_kind == "samples":
        pspec["through"] = through
    spec_key = tuple(sorted(pspec.items()))
    holder, previewed = None, ""
    try:
        holder, previewed = preview.show_first(stamps, spec_key, dataset, extent, res, list(models.values()),
                                               x[0], lambda: _plane_cached(stamps, spec_key, models, x, y),
                                               names, class_names)
        cs = _cross_section(stamps, spec_key, extent, res, models, x, y)
    except JacregError as exc:
        common.show_error(exc)
        return
    finally:
        if holder is not None:
            holder.empty()
    preview.mark_done((stamps, spec_key, extent, res))
    if cs.plane.note:
        st.info(f"Plane: {common.md(cs.plane.note)}")
    far = [mk for mk in cs.plane.marks if max(abs(mk[1]), abs(mk[2])) > extent]
    if far:
        st.caption("Outside the window: " + ", ".join(f"{mk[0]} at (u, v) = ({mk[1]:.2f}, {mk[2]:.2f})"
                                                       for mk in far) + "; raise the extent to see them.")

    fig = plots.cells_figure(cs, names, class_names, height=430 if len(names) > 2 else 480)
    event = st.plotly_chart(fig, key=K + "chart", on_select="rerun", selection_mode=("points", "box"),
                            theme=None)
    st.caption(f"{res}x{res} grid, {int(cs.evaluations.sum()):,} model evaluations for the maps "
               f"({100 * cs.evaluations.sum() / (len(names) * res * res):.1f}% of every point), "
               f"{cs.seconds:.2f} s.{previewed} Click a point (or drag a box) to see the image there.")
    if _is_first_view(entries, pspec):
        st.caption(first_view_caption(cs, names, sample, dataset, plane=plane_kind))

    # Radii and statistics of this plane.
    full_space = st.checkbox("Also the full-space distance to the nearest adversarial example (FMN, L2)",
                             key=K + "fmn")
    adv = _min_adversarial(stamps, dataset, sample, list(models.values()), x) if full_space else None
    rows = []
    for m, nm in enumerate(names):
        met = cs.metrics(m)
        row = {"model": nm, "prediction": class_label(int(cs.origin_label[m]), class_names),
               "p": round(float(cs.origin_confidence[m]), 3),
               "in-plane radius": _fmt_radius(float(cs.boundary_distance[m]), float(cs.boundary_searched[m])),
               "linearised radius": _fmt_linearised(float(cs.predicted_distance[m])),
               "cell area (% of window)": round(100 * met["area_fraction"], 1),
               "regions": int(met["regions"]), "evaluations": int(cs.evaluations[m])}
        if adv is not None:
            row["full-space radius (FMN)"] = f"{adv[m]:.4g}" if math.isfinite(adv[m]) else "not found"
        rows.append(row)
    st.dataframe(rows, hide_index=True)
    d1, d2 = st.columns(2)
    stem = f"cells-{dataset}-{sample}-{plane_kind}"
    d1.download_button("NPZ", data=cs.npz_bytes, file_name=f"{stem}.npz", mime="application/octet-stream",
                       key=K + "npz", icon=":material/download:", on_click="ignore")
    d2.download_button("PNG", data=lambda: plots.cells_png(cs, names, class_names,
                                                           title=f"{dataset} #{sample}, {plane_kind} plane"),
                       file_name=f"{stem}.png", mime="image/png", key=K + "png", icon=":material/image:",
                       on_click="ignore")

    _probe(event, cs, models, names, class_names)
    _statistics_section(stamps, names, dataset, n, models, x, y, extent, seed)
    film_section(entries, dataset, x, y, pspec, extent, class_names)


def _selected_point(event: Any) -> tuple[float, float] | None:
    """Plane coordinates of a clicked point, or the centre of a dragged box."""
    sel = getattr(event, "selection", None) or {}
    points = sel.get("points") or []
    if points:
        return float(points[0]["x"]), float(points[0]["y"])
    boxes = sel.get("box") or []
    if boxes:
        bx, by = boxes[0].get("x") or [0, 0], boxes[0].get("y") or [0, 0]
        return float(np.mean(bx)), float(np.mean(by))
    return None


def _probe(event: Any, cs: cells.CrossSection, models: dict[str, torch.nn.Module], names: list[str],
           class_names: list[str] | None) -> None:
    st.subheader("The image at a point of the plane")
    point = _selected_point(event)
    if point is not None and point != st.session_state.get(K + "last_click"):
        st.session_state[K + "last_click"] = point
        st.session_state[K + "pa"], st.session_state[K + "pb"] = point
    st.session_state.setdefault(K + "pa", 0.0)
    st.session_state.setdefault(K + "pb", 0.0)
    c1, c2, c3 = st.columns([1, 1, 2])
    a = float(c1.number_input("u", step=0.1, format="%.4f", key=K + "pa"))
    b = float(c2.number_input("v", step=0.1, format="%.4f", key=K + "pb"))
    xp = cs.plane.point(a, b)
    labels, conf = cells.predict(list(models.values()), xp)
    outside = float(((xp < 0) | (xp > 1)).float().mean())
    with c3:
        st.image(_image(xp), width=112, caption=f"(u, v) = ({a:.3f}, {b:.3f}), at L2 distance "
                 f"{math.hypot(a, b):.3f} from the sample")
    if outside > 0:
        st.caption(f"{100 * outside:.0f}% of this image's pixels lie outside [0, 1]: the models see them as "
                   "they are; the picture clips them.")
    st.dataframe([{"model": nm, "prediction": class_label(int(labels[m, 0]), class_names),
                   "p": round(float(conf[m, 0]), 3)} for m, nm in enumerate(names)],
                 hide_index=True)


def _statistics_section(stamps: tuple[str, ...], names: list[str], dataset: str, n: int,
                        models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                        extent: float, seed: int) -> None:
    with st.expander("Cell statistics over many test samples (random and adversarial planes)"):
        st.caption("Per model: mean and median in-plane radius, the cell's share of the window and the "
                   "number of single-class regions (fragmentation), on a random plane per sample (shared "
                   "by the models) and on each model's own adversarial plane (its FGSM direction and a "
                   "random one). Uses the extent above.")
        c1, c2, c3 = st.columns(3)
        count = int(c1.number_input("Samples", min_value=1, max_value=n, value=min(5, n), step=1, format="%d",
                                    key=K + "stats_n"))
        sres = int(c2.number_input("Resolution", min_value=cells.MIN_RESOLUTION,
                                   max_value=cells.MAX_RESOLUTION, value=31, step=10, format="%d",
                                   key=K + "stats_res"))
        go = c3.button("Compute statistics", key=K + "stats_go")
        if not 1 <= count <= n:
            st.error(f"Samples: pick 1 to {n}.")
            return
        try:
            cells.check_grid(extent, sres)
        except ConfigError as exc:
            common.show_error(exc)
            return
        args = (stamps, tuple(names), dataset, count)
        if go:
            st.session_state[K + "stats_args"] = (*args, extent, sres, seed)
        saved = st.session_state.get(K + "stats_args")
        if saved is None or saved[:4] != args:
            return
        rows = []
        for kind in ("random", "adversarial"):
            try:
                res = _statistics(*saved[:4], kind, *saved[4:], list(models.values()), x, y)
            except JacregError as exc:
                common.show_error(exc)
                return
            for s in res:
                rows.append({"model": s["name"], "planes": kind, "samples": s["samples"],
                             "radius mean": round(s["radius_mean"], 4) if math.isfinite(s["radius_mean"])
                             else None, "radius median": round(s["radius_median"], 4)
                             if math.isfinite(s["radius_median"]) else None,
                             "none found": s["no_boundary"],
                             "cell area (% of window)": round(100 * s["area_fraction_mean"], 1),
                             "regions": round(s["regions_mean"], 2), "accuracy": round(s["accuracy"], 3)})
        st.dataframe(rows, hide_index=True)
        st.caption(f"extent {saved[4]:g}, {saved[5]}x{saved[5]} grid per plane; radii searched up to "
                   f"{4 * saved[4]:g} (\"none found\" counts the samples with no other class that far).")


main()
