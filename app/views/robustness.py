"""Robustness: accuracy against attack strength for zoo models, trained runs and uploads.

The curves are computed by :class:`jacreg.robustness.CurveRunner` in a background thread (it never
calls Streamlit); a fragment polls it every second and redraws the charts, so the curves grow
while the page stays usable, and Stop takes effect at the next batch, epsilon or PGD chunk.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
import torch

from app import common
from jacreg import architectures, data, robustness
from jacreg.catalog import ModelEntry
from jacreg.device import describe, pick
from jacreg.errors import JacregError
from jacreg.figures import robustness as robustness_figures
from jacreg.figures.style import model_colors
from jacreg.jobs import remote
from jacreg.parsing import parse_floats

K = "rob_"                     # widget and session key prefix
RUNNER = K + "runner"          # session key: the CurveRunner of the last run
RESULTS = K + "results"        # session key: finished curves, kept across reruns
PROBES = K + "probes"          # session key: gradient-masking probes (PGD at epsilon 1)
ERRORS = K + "errors"          # session key: errors of the last run
COLLECTED = K + "collected"    # session key: id of the runner whose results are stored
POLL_S = 1.0
FROM_FILE = "(from the file)"
DEFAULT_ATTACKS = ["noise", "fgsm", "pgd", "cw"]


@st.cache_resource(show_spinner="Loading test data...", max_entries=8)
def _test_data(name: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` test samples (shared read-only: the attacks never modify them)."""
    return data.load_dataset(name, split="test", limit=limit)


def _uploads_section() -> list[ModelEntry]:
    """File uploader; returns the uploaded models that loaded. A refused file shows st.error."""
    files = st.file_uploader("Add models (.safetensors, .pt, .pth, .onnx)",
                             type=["safetensors", "pt", "pth", "onnx"], accept_multiple_files=True,
                             key=K + "upload",
                             help="Loaded safely: tensors only (safetensors, or torch.load with "
                                  "weights_only=True), strict state-dict match, a test forward pass; ONNX "
                                  "graphs of any architecture converted to torch (one file, the weights "
                                  "inside). Kept for this session only.")
    with st.expander("Architecture and dataset for files without a model card",
                     expanded=bool(st.session_state.get(K + "needs_arch"))):
        c1, c2 = st.columns(2)
        arch = c1.selectbox("Architecture", [FROM_FILE, *architectures.names()], key=K + "up_arch")
        ds = c2.selectbox("Dataset", [FROM_FILE, *data.names()], key=K + "up_dataset")
    out = []
    needs_arch = False
    for f in files or []:
        try:
            entry = common.add_upload(f.name, f.getvalue(), None if arch == FROM_FILE else arch,
                                      None if ds == FROM_FILE else ds)
        except JacregError as exc:
            needs_arch = needs_arch or "choose the architecture" in str(exc)
            st.error(f"**{common.md(f.name)}** was not loaded: {common.md(exc)}", icon=":material/block:")
            continue
        out.append(entry)
        if entry.meta.get("inferred"):
            st.caption(common.md(str(entry.meta["inferred"]).replace("the uploaded file", f.name)))
    if needs_arch != bool(st.session_state.get(K + "needs_arch")):
        st.session_state[K + "needs_arch"] = needs_arch  # the chooser opens (or closes) on the next run
        st.rerun()
    return out


def _grid(label: str, default: str, key: str) -> list[float] | None:
    text = st.text_input(label, default, key=key)
    try:
        return parse_floats(text, label)
    except JacregError as exc:
        common.show_error(exc)
        return None


def _start(models: list[ModelEntry], attacks: list[str], grids: dict[str, list[float]], samples: int,
           batch_size: int, probe: bool) -> None:
    """Load models and data, validate everything, then start the background runner."""
    ds = st.session_state.get(common.DATASET, "mnist-5k")
    try:
        x, y = _test_data(ds, samples)
    except JacregError as exc:
        st.error(common.md(f"Test data {ds!r}: {exc}"))
        return
    tasks: list[robustness.CurveTask] = []
    for e in models:
        try:
            model, meta = common.load_entry(e)
        except JacregError as exc:
            st.error(common.md(f"{e.label}: {exc}"))
            continue
        shape = tuple(meta.get("input_shape") or x.shape[1:])
        if tuple(x.shape[1:]) != shape:
            st.warning(f"{common.md(e.label)} expects images of shape {shape}, but {ds} has "
                       f"{tuple(x.shape[1:])}: skipped. Pick its dataset in the sidebar.")
            continue
        for a in attacks:
            tasks.append(robustness.CurveTask(e.label, model, x, y, a, grids[robustness.grid_key(a)]))
        if probe:
            tasks.append(robustness.CurveTask(e.label, model, x, y, "pgd", [1.0], probe=True))
    if not tasks:
        return
    try:
        address = common.ray_address()
    except JacregError as exc:
        st.error(str(exc))
        return
    runner = (remote.RayCurveRunner(tasks, address=address, batch_size=batch_size, seed=0) if address else
              robustness.CurveRunner(tasks, batch_size=batch_size, device=None, seed=0))
    st.session_state[RUNNER] = runner.start()
    st.session_state[ERRORS] = []
    st.rerun()  # redraw the buttons (Run disabled, Stop enabled) and start polling


def _collect(runner: robustness.CurveRunner) -> None:
    """Move a finished runner's curves into the session's results (new replace same model+attack)."""
    if st.session_state.get(COLLECTED) == runner.id:
        return
    snap = runner.snapshot()
    curves = [r for r in snap["results"] if not r.get("probe")]
    probes = [r for r in snap["results"] if r.get("probe")]
    keep = [r for r in st.session_state.get(RESULTS, [])
            if (r["model"], r["attack"]) not in {(c["model"], c["attack"]) for c in curves}]
    st.session_state[RESULTS] = keep + curves
    probed = {q["model"] for q in probes}
    old_probes = [p for p in st.session_state.get(PROBES, []) if p["model"] not in probed]
    st.session_state[PROBES] = old_probes + probes
    st.session_state[ERRORS] = snap["errors"]
    st.session_state[COLLECTED] = runner.id


def _summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        spec = robustness.get_attack(r["attack"])
        med = r.get("median_min_epsilon")
        rows.append({
            "model": r["model"], "attack": spec.title, "samples": r["samples"],
            "clean accuracy": r["clean_accuracy"],
            "accuracy at epsilon": "  ".join(f"{e:g}: {a:.0%}" for e, a in zip(r["epsilons"], r["accuracy"],
                                                                                strict=True)),
            "median epsilon that breaks a sample": None if med is None or med == float("inf") else med,
            "mean L2 of adversarials": r.get("mean_l2"),
            "seconds": round(r["seconds"], 2),
        })
    return rows


def _sanity(results: list[dict[str, Any]], probes: list[dict[str, Any]]) -> None:
    warnings = robustness.sanity_check(results + probes)
    if warnings:
        st.badge(f"Sanity: {len(warnings)} warning{'s' if len(warnings) > 1 else ''}",
                 icon=":material/warning:", color="orange")
        for w in warnings:
            st.warning(common.md(w))
    elif probes:
        st.badge("Sanity: no sign of gradient masking", icon=":material/check:", color="green")
    else:
        st.badge("Sanity: not checked (tick the gradient-masking check)", color="gray")
    for p in probes:
        st.caption(f"Gradient-masking check, {common.md(p['model'])}: PGD with an unbounded budget "
                   "(epsilon 1, "
                   f"{p['params'].get('steps')} steps, no random start) leaves {p['accuracy'][0]:.1%} "
                   f"accuracy (chance {p['chance']:.0%}) on {p['samples']} samples.")


def _live() -> None:
    """Progress, charts, table, badge and exports; polls the runner while it runs."""
    runner: robustness.CurveRunner | None = st.session_state.get(RUNNER)
    snap = runner.snapshot() if runner is not None else None
    finished = runner is not None and snap is not None and snap["done"]
    if finished and st.session_state.get(COLLECTED) != runner.id:
        assert runner is not None
        _collect(runner)
        st.rerun()  # a full rerun: stops the polling and re-enables Run
    running = snap is not None and not snap["done"]
    results: list[dict[str, Any]] = list(st.session_state.get(RESULTS, []))
    probes: list[dict[str, Any]] = list(st.session_state.get(PROBES, []))
    partial = None
    if running:
        assert snap is not None
        st.progress(min(1.0, snap["progress"]),
                    text=f"{snap['current'] or 'starting'} ({snap['progress']:.0%}, {snap['seconds']:.0f} s)")
        live = [r for r in snap["results"] if not r.get("probe")]
        done_keys = {(r["model"], r["attack"]) for r in live}
        results = [r for r in results if (r["model"], r["attack"]) not in done_keys] + live
        partial = snap["partial"] if snap["partial"] and not snap["partial"].get("probe") else None
    for err in st.session_state.get(ERRORS, []) + (snap["errors"] if running and snap else []):
        st.error(common.md(err))
    groups = robustness_figures.group_by_attack(results)
    if partial and partial["attack"] not in groups:
        groups[partial["attack"]] = []
    if not groups:
        if not running:
            st.info("Pick models and attacks, then press Run. Curves appear here as they grow.")
        return
    cols = st.columns(2)
    labels = [e.label for e in common.entries()] + [r["model"] for r in results]
    colors = model_colors(labels)
    for i, (attack, rs) in enumerate(groups.items()):
        part = partial if partial and partial["attack"] == attack else None
        fig = robustness_figures.curve_figure(rs, partial=part, title=robustness.get_attack(attack).title,
                                            colors=colors)
        cols[i % 2].plotly_chart(fig, key=f"{K}chart_{attack}", width="stretch")
    if running:
        return
    st.subheader("Results")
    st.dataframe(_summary_rows(results), hide_index=True, width="stretch",
                 column_config={"clean accuracy": st.column_config.NumberColumn(format="percent")})
    _sanity(results, probes)
    c1, c2, c3 = st.columns(3)
    c1.download_button("CSV", data=robustness.to_csv(results), file_name="robustness.csv", mime="text/csv",
                       icon=":material/download:", on_click="ignore", key=K + "csv")
    c2.download_button("PNG", data=lambda: robustness_figures.curves_png(results), file_name="robustness.png",
                       mime="image/png", icon=":material/image:", on_click="ignore", key=K + "png")
    if c3.button("Clear results", key=K + "clear"):
        for key in (RESULTS, PROBES, ERRORS):
            st.session_state[key] = []
        st.rerun()


# --- the page ------------------------------------------------------------------------------------

st.title("Robustness")
st.markdown(
    "Accuracy on the first test samples as the perturbation grows: white noise, FGSM, PGD, "
    "Carlini-Wagner, DeepFool, FMN (foolbox). Epsilon is a distance in pixel units of images in [0, 1] "
    "(L-inf: the largest change of any pixel; L2: the Euclidean length of the change). A fixed-epsilon "
    "attack only re-attacks the samples still correct at the previous epsilon, so the curves never rise; "
    "a minimisation attack gives the whole curve from each sample's minimal perturbation."
)

runner_now: robustness.CurveRunner | None = st.session_state.get(RUNNER)
busy = runner_now is not None and not runner_now.snapshot()["done"]

left, right = st.columns([1, 1])
with left:
    st.subheader("Models")
    uploaded = _uploads_section()
    selected = common.selected_entries()
    models = selected + [u for u in uploaded if u.key not in {e.key for e in selected}]
    if models:
        st.markdown("Attacking: " + ", ".join(f"**{common.md(e.label)}**" for e in models))
    else:
        st.info("Select models in the sidebar or upload a checkpoint.")
    ds_name = st.session_state.get(common.DATASET, "mnist-5k")
    for e in models:
        card_ds = e.meta.get("dataset") if isinstance(e.meta, dict) else None
        if card_ds and card_ds != ds_name:
            st.caption(f"{common.md(e.label)} was trained on {common.md(card_ds)}; the test samples come "
                       f"from {ds_name} (sidebar).")
with right:
    st.subheader("Attacks")
    attacks = st.multiselect("Attacks", robustness.names(), default=DEFAULT_ATTACKS, key=K + "attacks",
                             format_func=lambda n: robustness.get_attack(n).title)
    needed = {robustness.grid_key(a) for a in attacks} or {"linf"}
    grids: dict[str, list[float] | None] = {}
    defaults = robustness.default_grids()
    for gk, label in robustness.GRID_LABELS.items():
        if gk in needed:
            text = ",".join(f"{e:g}" for e in defaults[gk])
            grids[gk] = _grid(label, text, K + "eps_" + gk.replace("-", "_"))
    c1, c2 = st.columns(2)
    samples = int(c1.number_input("Samples (first N of the test set)", 1, 10000, 200, step=50,
                                  key=K + "samples"))
    batch_size = int(c2.number_input("Batch size", 1, 4096, 50, step=10, key=K + "batch",
                                     help="Smaller batches update the curves more often."))
    probe = st.checkbox("Gradient-masking check (PGD with an unbounded budget)", value=True, key=K + "probe",
                        help="As ART's SecurityCurve: PGD at epsilon 1 from the clean image must reach "
                             "chance accuracy; otherwise the gradients are probably masked.")
    where = ("a Ray worker (its GPU when it has one)" if st.session_state.get(common.BACKEND) == "Ray"
             else describe(pick(common.current_device())))
    st.caption(f"Device: {where} (sidebar)")

grid_ok = all(g is not None for g in grids.values())
notes: list[str] = []
if grid_ok and attacks:
    for a in attacks:
        spec = robustness.get_attack(a)
        grid = grids.get(robustness.grid_key(a))
        try:
            _, n = robustness.check_epsilons(grid or [], spec, data.dataset_spec(ds_name).input_shape)
            notes += [f"{spec.title}: {x}" for x in n]
        except JacregError as exc:
            st.error(common.md(f"{spec.title}: {exc}"))
            grid_ok = False
for note in dict.fromkeys(notes):
    st.caption(note)

b1, b2, _ = st.columns([1, 1, 4])
run_clicked = b1.button("Run", type="primary", icon=":material/play_arrow:", key=K + "run",
                        disabled=busy or not models or not attacks or not grid_ok)
stop_clicked = b2.button("Stop", icon=":material/stop:", key=K + "stop", disabled=not busy)
if stop_clicked and runner_now is not None:
    runner_now.stop()
if run_clicked and not busy:
    _start(models, attacks, {k: v for k, v in grids.items() if v is not None}, samples, batch_size, probe)

runner_now = st.session_state.get(RUNNER)
polling = runner_now is not None and not runner_now.snapshot()["done"]
st.fragment(_live, run_every=POLL_S if polling else None)()
