"""Jacobian: ‖J‖_F over test data, random-projection estimates against the exact value, timing, and the
cell radius the Jacobian predicts against the measured one."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import common
from jacreg import cells, data, jacobian_stats
from jacreg.catalog import ModelEntry
from jacreg.errors import ConfigError, JacregError
from jacreg.figures import jacobian as jacobian_figures
from jacreg.figures import theory as theory_figures

K = "jac_"
RESULT = "jac_result"   # session key: the last computed analysis


def _dataset_for(entry: ModelEntry) -> str:
    ds = entry.meta.get("dataset") if isinstance(entry.meta, dict) else None
    return ds if ds in data.names() else st.session_state.get(common.DATASET, data.names()[0])


def _analyse(entry: ModelEntry, dataset: str, samples: int, repeats: int, per_sample: int, method: str,
             timing_batch: int, timing_repeats: int) -> dict[str, Any]:
    model, _ = common.load_entry(entry)
    x, y = data.load_dataset(dataset, split="test", limit=samples)
    names = data.dataset_spec(dataset).class_names
    bar = st.progress(0.0, text="Exact ‖J‖_F per sample...")

    def tick(what: str, share: float, offset: float) -> Any:
        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("total"):
                bar.progress(min(1.0, offset + share * ev["done"] / ev["total"]), text=what)
        return on_event

    stats = jacobian_stats.norms_by_class(model, x, y, class_names=names, normalized=True,
                                          on_event=tick("Exact ‖J‖_F per sample...", 0.3, 0.0))
    spread = jacobian_stats.projection_spread(model, x, n_projs=(1, 3), repeats=repeats,
                                              per_sample=per_sample, method=method, seed=0,
                                              on_event=tick("Random projections...", 0.5, 0.3))
    timing = jacobian_stats.estimator_timing(model, x[:timing_batch], y[:timing_batch],
                                             repeats=timing_repeats,
                                             on_event=tick("Timing the estimators...", 0.2, 0.8))
    bar.empty()
    return {"key": entry.key, "name": entry.name, "dataset": dataset, "samples": len(x), "stats": stats,
            "spread": spread, "timing": timing, "device": common.current_device()}


def _show(res: dict[str, Any]) -> None:
    stats: jacobian_stats.NormStats = res["stats"]
    spread: jacobian_stats.ProjectionSpread = res["spread"]
    st.subheader(common.md(f"{res['name']} on {res['samples']} {res['dataset']} test samples"))
    c = st.columns(3)
    c[0].metric("Mean ‖J‖_F", f"{stats.mean:.4g}")
    c[1].metric("Median ‖J‖_F", f"{float(sorted(stats.norms)[len(stats.norms) // 2]):.4g}")
    c[2].metric("Accuracy on these samples", f"{stats.accuracy:.2%}")

    st.markdown("##### ‖J(x)‖_F over the test samples")
    per_class = st.toggle("Per class", value=True, key=K + "per_class")
    st.plotly_chart(jacobian_figures.norm_histogram_figure(stats, per_class=per_class), key="jac_hist")
    left, right = st.columns([3, 2])
    left.plotly_chart(jacobian_figures.norm_box_figure(stats), key="jac_box")
    right.dataframe(stats.per_class, hide_index=True, width="stretch",
                    column_config={"accuracy": st.column_config.NumberColumn(format="percent"),
                                   "mean": st.column_config.NumberColumn(format="%.4g"),
                                   "median": st.column_config.NumberColumn(format="%.4g"),
                                   "std": st.column_config.NumberColumn(format="%.3g")})

    st.markdown("##### Random projections against the exact value")
    bound = ("√(2(C−1)/((C+2)·n_proj)) with C = " + str(spread.num_classes) if spread.method == "vjp"
             else "√(2/n_proj) (Gaussian input-space tangents)")
    st.markdown(
        f"Each point is one draw of the training estimator (method `{spread.method}`) divided by the "
        "exact value. Blue: the whole batch, as one training step sees it; red: single samples. "
        f"The estimator is unbiased (centred on 1); the black marks show the bound on one sample's "
        f"standard deviation, {bound}."
    )
    st.plotly_chart(jacobian_figures.projection_spread_figure(spread), key="jac_spread")
    st.dataframe(spread.summary, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(format="%.4g") for k in
                                ("exact", "mean", "std", "relative_bias", "relative_std_batch",
                                 "relative_std_sample", "relative_std_bound")})

    st.markdown("##### Estimator cost on this device")
    st.caption("Median seconds per training-like step (forward, CE + λ·R, gradient w.r.t. the weights) "
               "and the ratio to plain cross-entropy. The paper reports about 1.3x for n_proj = 1.")
    st.plotly_chart(jacobian_figures.timing_figure(res["timing"]), key="jac_timing")
    st.dataframe(res["timing"], hide_index=True, width="stretch")


st.title(":material/functions: Jacobian")
st.markdown(
    "The input-output Jacobian J(x) = ∂z/∂x of a model's logits z, with respect to the normalised "
    "input as in the paper. Jacobian regularization penalises ½‖J‖²_F, estimated during training with "
    "random projections (Algorithm 1): this page shows ‖J‖_F over test samples, how close the "
    "n_proj = 1 and 3 estimates come to the exact value (the paper's Fig. 2 for any model), and what "
    "each estimator costs here."
)

entries = common.selected_entries() or common.entries()
if not entries:
    st.info("No models yet: train one on the Train page, or use the zoo.")
    st.stop()

labels = {e.key: e.label for e in entries}
if st.session_state.get(K + "model") not in labels:
    st.session_state[K + "model"] = entries[0].key
top = st.columns([3, 2])
key = top[0].selectbox("Model", list(labels), format_func=labels.get, key=K + "model",
                       help="From the sidebar selection (all models when none is selected).")
entry = next(e for e in entries if e.key == key)
ds_default = _dataset_for(entry)
dataset = top[1].selectbox("Test data", data.names(), index=data.names().index(ds_default),
                           key=K + f"dataset_{key}")
with st.form("jac_form"):
    c = st.columns(3)
    samples = c[0].number_input("Test samples", min_value=10, max_value=10000, value=200, step=50)
    repeats = c[1].number_input("Draws per n_proj", min_value=2, max_value=500, value=20, step=5)
    per_sample = c[2].number_input("Single samples to estimate", min_value=0, max_value=100, value=8)
    c = st.columns(3)
    method = c[0].selectbox("Estimator", ("vjp", "jvp", "auto"),
                            help="vjp: Algorithm 1 (output projections); jvp: forward mode.")
    timing_batch = c[1].number_input("Timing batch size", min_value=1, max_value=1000, value=100)
    timing_repeats = c[2].number_input("Timed steps", min_value=1, max_value=50, value=5)
    go = st.form_submit_button("Compute", type="primary", icon=":material/play_arrow:")

if go:
    try:
        with st.spinner("Computing Jacobians..."):
            st.session_state[RESULT] = _analyse(entry, dataset, int(samples), int(repeats), int(per_sample),
                                                method, int(timing_batch), int(timing_repeats))
    except JacregError as exc:
        common.show_error(exc)

res = st.session_state.get(RESULT)
if res is not None and res["key"] == key:
    _show(res)
elif res is None:
    st.info("Press **Compute** to measure the Jacobian of the selected model.")


# --- the cell radius the Jacobian predicts, against the measured one -------------------------------

THEORY = "jac_theory"   # session key: the last scatter computed


@st.cache_data(show_spinner=False, max_entries=8)
def _radius_theory(stamps: tuple[str, ...], names: tuple[str, ...], dataset: str, samples: int,
                   planes: tuple[str, ...], extent: float, adversarial_extent: float, seed: int,
                   _models: list) -> cells.RadiusTheory:
    x, y = data.load_dataset(dataset, split="test", limit=samples)
    bar = st.progress(0.0, text="Predicted and measured radii...")

    def on_event(ev: dict[str, Any]) -> None:
        bar.progress(float(ev["fraction"]), text=f"Predicted and measured radii: {ev['done']}/{ev['total']}")

    out = cells.radius_theory(_models, x, y, samples, planes, extent=extent,
                              adversarial_extent=adversarial_extent, seed=seed, names=list(names),
                              on_event=on_event)
    bar.empty()
    return out


def _theory_section(all_entries: list[ModelEntry], selected: list[str]) -> None:
    st.divider()
    st.subheader("Cell radius: the Jacobian's prediction against the measurement")
    st.markdown(
        "The paper's argument: a small Jacobian means large margins, i.e. a large decision cell. Linearising "
        "the logits z at a test sample predicts the in-plane distance to the nearest boundary, "
        "min over classes k of (z_y − z_k) / ‖in-plane gradient of z_y − z_k‖ (exact for a linear model); "
        "the measured distance is the circle of the Cells page. On the diagonal the Jacobian explains the "
        "cell; above it the cell is smaller than the flat Jacobian promises (curvature sets it)."
    )
    labels = {e.key: e.label for e in all_entries}
    if not [k for k in st.session_state.get(K + "theory_models", []) if k in labels]:
        st.session_state[K + "theory_models"] = [k for k in selected if k in labels] or list(labels)[:2]
    with st.form("jac_theory_form"):
        keys = st.multiselect("Models", list(labels), format_func=labels.get, key=K + "theory_models")
        c = st.columns(5)
        samples = c[0].number_input("Samples", min_value=1, max_value=500, value=10, step=5,
                                    help="The first test samples of the models' dataset.")
        planes = c[1].multiselect("Planes", ["random", "adversarial"], default=["random", "adversarial"])
        extent = c[2].number_input("Random planes: extent", min_value=0.1, value=5.0, step=1.0,
                                   help="Radii are searched up to 4x this (L2 units of [0, 1] pixels).")
        adv_extent = c[3].number_input("Adversarial planes: extent", min_value=0.05, value=2.0, step=0.5)
        seed = c[4].number_input("Seed", min_value=0, value=0, step=1)
        go = st.form_submit_button("Compute the scatter", icon=":material/scatter_plot:")
    if go:
        chosen = [e for e in all_entries if e.key in keys]
        try:
            if not chosen:
                raise ConfigError("pick at least one model")
            loaded = [common.load_entry(e) for e in chosen]
            datasets = {str(m.get("dataset") or "mnist-5k") for _, m in loaded}
            if len(datasets) > 1:
                raise ConfigError("the models were trained on different datasets "
                                  f"({', '.join(sorted(datasets))}); compare models of one dataset")
            dataset = datasets.pop()
            names = tuple(e.name for e in chosen) if len({e.name for e in chosen}) == len(chosen) \
                else tuple(e.label for e in chosen)
            stamps = tuple(f"{e.key}@{e.path.stat().st_mtime if e.path is not None else e.meta.get('sha256')}"
                           for e in chosen)
            st.session_state[THEORY] = _radius_theory(stamps, names, dataset, int(samples), tuple(planes),
                                                      float(extent), float(adv_extent), int(seed),
                                                      [m for m, _ in loaded])
        except JacregError as exc:
            common.show_error(exc)
    res: cells.RadiusTheory | None = st.session_state.get(THEORY)
    if res is None:
        st.info("Pick models and press **Compute the scatter** (about 1 s per sample, plane and model here).")
        return
    st.plotly_chart(theory_figures.theory_figure(res), key=K + "theory_chart", theme=None)
    st.dataframe(res.summary(), hide_index=True, width="stretch",
                 column_config={"spearman": st.column_config.NumberColumn("Spearman ρ", format="%.3f"),
                                "median_ratio": st.column_config.NumberColumn("median predicted/measured",
                                                                              format="%.3g"),
                                "within_3x": st.column_config.NumberColumn("within 3x", format="percent")})
    st.caption("Colour: ‖J(x)‖_F of the sample (with respect to the pixels, the radii's units). Open "
               "symbols: no boundary found within the search (drawn at its limit, 4x the extent).")
    d1, d2 = st.columns(2)
    d1.download_button("CSV", data=res.csv_bytes(), file_name="radius-theory.csv", mime="text/csv",
                       key=K + "theory_csv", on_click="ignore", icon=":material/download:")
    d2.download_button("PNG", data=lambda: theory_figures.theory_png(res), file_name="radius-theory.png",
                       mime="image/png", key=K + "theory_png", on_click="ignore", icon=":material/image:")


_theory_section(common.entries(), [e.key for e in common.selected_entries()])
