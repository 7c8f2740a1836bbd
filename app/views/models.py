"""Models: every model (zoo, trained runs, uploads) with its model card; compare, download, delete."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import common
from jacreg import jobs
from jacreg.catalog import ModelEntry
from jacreg.errors import JacregError
from jacreg.figures import robustness as robustness_figures
from jacreg.figures import training as training_figures
from jacreg.fileio import read_jsonl

COMPARE = "models_compare"   # session key: the model keys compared on this page
DELETE_ERROR = "models_delete_error"


def _metrics(e: ModelEntry) -> dict[str, Any]:
    m = e.meta.get("metrics") if isinstance(e.meta, dict) else None
    return m if isinstance(m, dict) else {}


def _config(e: ModelEntry) -> dict[str, Any]:
    c = e.meta.get("config") if isinstance(e.meta, dict) else None
    return c if isinstance(c, dict) else {}


def _regularizers(e: ModelEntry) -> str:
    regs = e.meta.get("regularizers")
    if isinstance(regs, (list, tuple)) and regs:
        return "+".join(str(r) for r in regs)
    cfg = _config(e)
    return jobs.regularizer_label(cfg) if cfg else "?"


def _history(e: ModelEntry) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Epoch and step records: the run's events when there are any, else the card's history."""
    if e.source == "run" and e.path is not None:
        events = read_jsonl(e.path.parent / jobs.EVENTS_FILE)
        if events:
            return jobs.epoch_history(events), jobs.step_history(events)
    hist = e.meta.get("history")
    return ([h for h in hist if isinstance(h, dict)] if isinstance(hist, list) else []), []


def _row(e: ModelEntry) -> dict[str, Any]:
    m, cfg = _metrics(e), _config(e)
    hist, _ = _history(e)
    return {"model": e.name, "source": e.source, "arch": e.meta.get("arch", "?"),
            "dataset": e.meta.get("dataset", "?"), "regularizers": _regularizers(e),
            "epochs": cfg.get("epochs", len(hist) or None),
            "clean accuracy": m.get("clean_accuracy", m.get("test_accuracy")),
            "mean ||J||_F": m.get("jacobian_norm_mean")}


def _download(e: ModelEntry) -> None:
    if e.source == "upload":
        u = common.uploads().get(e.key)
        if u is None:
            return
        data: Any = u["data"]
    elif e.path is not None and e.path.is_file():
        path = e.path
        data = path.read_bytes
    else:
        return
    st.download_button("Download checkpoint", data=data, file_name=f"{e.name}.safetensors",
                       mime="application/octet-stream", key=f"dl_{e.key}", icon=":material/download:",
                       on_click="ignore")


def _delete_run(e: ModelEntry) -> None:
    """Button callback (runs before the page, so it may change the selection widgets' state)."""
    assert e.path is not None
    try:
        jobs.delete_run(e.path.parent)
    except JacregError as exc:
        st.session_state[DELETE_ERROR] = str(exc)
        return
    common.list_models_cached.clear()
    common.select([k for k in st.session_state.get(common.SELECTED, []) if k != e.key])
    st.session_state[COMPARE] = [k for k in st.session_state.get(COMPARE, []) if k != e.key]
    st.toast(f"Deleted {common.md(e.name)}")


def _delete(e: ModelEntry) -> None:
    if e.source != "run" or e.path is None:
        return
    with st.popover("Delete run", icon=":material/delete:"):
        st.write(f"Delete **{common.md(e.name)}** and its folder {common.md(e.path.parent)} (checkpoint, "
                 "events, logs)? This cannot be undone.")
        st.button("Delete for good", key=f"del_{e.key}", type="primary", on_click=_delete_run, args=(e,))


def _card(e: ModelEntry) -> None:
    meta, m, cfg = e.meta, _metrics(e), _config(e)
    st.markdown(f"#### {common.md(e.name)}")
    st.caption(f"{e.source} · {common.md(e.path) if e.path is not None else 'uploaded this session'}")
    if not meta:
        st.warning("This checkpoint has no model card (metadata); only its weights are known.")
    cols = st.columns(3)
    cols[0].metric("Clean accuracy", f"{m['clean_accuracy']:.2%}" if m.get("clean_accuracy") is not None
                   else "n/a")
    cols[1].metric("Mean ‖J‖_F", f"{m['jacobian_norm_mean']:.3g}" if m.get("jacobian_norm_mean") is not None
                   else "n/a")
    cols[2].metric("Regularizers", _regularizers(e))
    facts = {"architecture": meta.get("arch"), "dataset": meta.get("dataset"),
             "classes": meta.get("num_classes"), "input shape": meta.get("input_shape"),
             "dropout": meta.get("dropout"), "created": meta.get("created"),
             "jacreg version": meta.get("jacreg_version")}
    st.table({k: str(v) for k, v in facts.items() if v is not None})
    if cfg:
        with st.expander("Training config"):
            st.json(cfg, expanded=False)
            if meta.get("command"):
                st.code(str(meta["command"]), language="bash")
    buttons = st.columns(2)
    with buttons[0]:
        _download(e)
    with buttons[1]:
        _delete(e)


def _curves(e: ModelEntry) -> None:
    hist, steps = _history(e)
    if hist or steps:
        jr = _config(e).get("jr")
        fig = training_figures.training_figure(hist, steps, jr_weight=float(jr) if jr else None, height=520)
        st.plotly_chart(fig, key=f"curves_{e.key}", config={"displaylogo": False})
    else:
        st.caption("No training curves stored with this model.")
    results = jobs.robustness_results(e.path) if e.path is not None else []
    if results:
        st.markdown("**Last robustness results** (the latest curve of each attack)")
        groups = robustness_figures.group_by_attack(results)
        for col, (attack, rs) in zip(st.columns(len(groups)), groups.items(), strict=True):
            col.plotly_chart(robustness_figures.curve_figure(rs[-1:], show_raw=False),
                             key=f"rob_{e.key}_{attack}")
    else:
        st.caption("No robustness results stored with this model (the Robustness page measures them).")


st.title(":material/inventory_2: Models")
st.markdown(
    "Every model you can analyse: the pretrained **zoo**, your trained **runs** and this session's "
    "**uploads**, each with its model card (architecture, data, regularizers, training curves, clean "
    "accuracy and mean ‖J‖_F on test data, with J taken with respect to the normalised input as in "
    "the paper's Table 1). Pick several to compare them side by side."
)

if st.session_state.get(DELETE_ERROR):
    st.error(common.md(st.session_state.pop(DELETE_ERROR)))
all_entries = common.entries()
if not all_entries:
    st.info("No models yet: train one on the Train page, or use the zoo "
            "(`python -m jacreg reproduce --zoo` fills `models/`).")
    st.stop()

st.dataframe([_row(e) for e in all_entries], hide_index=True, width="stretch",
             column_config={"clean accuracy": st.column_config.NumberColumn(format="percent"),
                            "mean ||J||_F": st.column_config.NumberColumn(format="%.3g")})

labels = {e.key: e.label for e in all_entries}
default = [k for k in st.session_state.get(COMPARE, []) if k in labels] or \
    [e.key for e in common.selected_entries()] or [all_entries[0].key]
st.session_state[COMPARE] = default
chosen = st.multiselect("Models to show", list(labels), key=COMPARE, format_func=labels.get,
                        help="Starts from the sidebar selection.")
by_key = {e.key: e for e in all_entries}
picked = [by_key[k] for k in chosen]
if not picked:
    st.info("Pick at least one model above.")
    st.stop()

if len(picked) > 1:
    st.subheader("Side by side")
    table: dict[str, dict[str, Any]] = {}
    for e in picked:
        r = _row(e)
        table[e.label] = {k: ("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
                          for k, v in r.items() if k != "model"}
    st.dataframe(table, width="stretch")
    histories = {e.label: _history(e)[0] for e in picked}
    if any(histories.values()):
        st.plotly_chart(training_figures.comparison_figure(histories), key="compare_curves")
    st.button("Analyse these on the other pages", help="Makes them the sidebar selection",
              on_click=common.select, args=([e.key for e in picked],))

per_row = min(len(picked), 3)
for i in range(0, len(picked), per_row):
    cols = st.columns(per_row)
    for col, e in zip(cols, picked[i:i + per_row], strict=False):
        with col, st.container(border=True):
            _card(e)

st.subheader("Training curves and robustness")
tabs = st.tabs([e.label for e in picked])
for tab, e in zip(tabs, picked, strict=True):
    with tab:
        _curves(e)
