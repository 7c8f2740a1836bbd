"""Train: start a training run in the background, watch it, stop or resume it."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import streamlit as st

from app import common
from jacreg import architectures, data, jobs
from jacreg.device import available
from jacreg.errors import JacregError
from jacreg.figures import training as training_figures
from jacreg.jobs import remote
from jacreg.training import ADV_ATTACKS, JR_METHODS, TrainConfig, suggested_snapshot_every

VIEWS = Path(__file__).resolve().parent
WATCH = "train_watch"       # session key: the job id this session watches
POLL_S = 2.0                # seconds between refreshes while a job runs
K = "train_"                # widget key prefix

#: The paper's five settings (Table 1); values on top of TrainConfig's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {"l2": 0.0, "dropout": 0.0, "jr": 0.0, "adv": "none"},
    "L2": {"l2": 5e-4, "dropout": 0.0, "jr": 0.0, "adv": "none"},
    "dropout": {"l2": 0.0, "dropout": 0.5, "jr": 0.0, "adv": "none"},
    "Jacobian (JR)": {"l2": 0.0, "dropout": 0.0, "jr": 0.01, "adv": "none"},
    "all combined": {"l2": 5e-4, "dropout": 0.5, "jr": 0.01, "adv": "none"},
}
FORM_FIELDS = ("name", "dataset", "arch", "epochs", "batch_size", "lr", "momentum", "l2", "dropout", "jr",
               "n_proj", "jr_method", "adv", "adv_eps", "adv_mix", "adv_steps", "seed", "device",
               "limit_batches", "eval_samples", "snapshot_every")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _init_form() -> None:
    ss = st.session_state
    ds = ss.get(common.DATASET, DEFAULTS["dataset"])
    trainable = data.names(trainable=True)
    start = {**DEFAULTS, "name": "", "dataset": ds if ds in trainable else DEFAULTS["dataset"],
             "limit_batches": 0, "eval_samples": DEFAULTS["eval_samples"] or 0,
             "device": common.current_device()}
    start["snapshot_every"] = _suggested_snapshots(start["arch"], start["epochs"], start["dataset"])
    for f in FORM_FIELDS:
        ss.setdefault(K + f, start[f])
    if ss[K + "device"] not in _devices():
        ss[K + "device"] = "auto"


def _devices() -> list[str]:
    """Devices a run can ask for: this machine's, or on Ray the worker's (auto = its GPU if any)."""
    return ["auto", "cpu"] if st.session_state.get(common.BACKEND) == "Ray" else available()


def _apply_preset() -> None:
    for k, v in PRESETS[st.session_state[K + "preset"]].items():
        st.session_state[K + k] = v


def _default_arch() -> None:
    with contextlib.suppress(JacregError):
        st.session_state[K + "arch"] = data.dataset_spec(st.session_state[K + "dataset"]).default_arch
    _default_snapshots()


def _suggested_snapshots(arch: str, epochs: int, dataset: str) -> int:
    try:
        return suggested_snapshot_every(arch, int(epochs), dataset)
    except JacregError:
        return 0


def _default_snapshots() -> None:
    """Snapshots on by default for small models (every epoch), off for large ones."""
    ss = st.session_state
    ss[K + "snapshot_every"] = _suggested_snapshots(ss[K + "arch"], ss[K + "epochs"], ss[K + "dataset"])


def _config_from_form() -> dict[str, Any]:
    ss = st.session_state
    cfg = {f: ss[K + f] for f in FORM_FIELDS}
    cfg["name"] = cfg["name"].strip() or None
    cfg["limit_batches"] = int(cfg["limit_batches"]) or None
    cfg["eval_samples"] = int(cfg["eval_samples"])
    return cfg


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def _form() -> None:
    st.subheader("New run")
    top = st.columns([2, 2, 2, 3])
    top[0].selectbox("Preset (the paper's settings)", list(PRESETS), key=K + "preset", index=None,
                     placeholder="choose a preset...", on_change=_apply_preset,
                     help="Fills in L2, dropout and JR as in the paper's Table 1.")
    top[1].selectbox("Dataset", data.names(trainable=True), key=K + "dataset", on_change=_default_arch,
                     help="mnist-5k works offline; the others are downloaded on first use.")
    top[2].selectbox("Architecture", architectures.names(), key=K + "arch", on_change=_default_snapshots)
    top[3].text_input("Name (optional)", key=K + "name", placeholder="e.g. lenet-jr-long")
    with st.form("train_form", border=True):
        c = st.columns(4)
        c[0].number_input("Epochs", min_value=1, step=1, key=K + "epochs")
        c[1].number_input("Batch size", min_value=1, step=10, key=K + "batch_size")
        c[2].number_input("Learning rate", min_value=0.0, format="%.4g", key=K + "lr",
                          help="Quenched x0.1 at 1/3 and 2/3 of training.")
        c[3].number_input("Momentum", min_value=0.0, max_value=0.999, format="%.3g", key=K + "momentum")
        st.markdown("**Regularizers**")
        c = st.columns(4)
        c[0].number_input("L2 weight decay", min_value=0.0, format="%.2e", key=K + "l2")
        c[1].number_input("Dropout", min_value=0.0, max_value=0.95, step=0.1, format="%.2f",
                          key=K + "dropout")
        c[2].number_input("JR weight λ_JR", min_value=0.0, format="%.4g", key=K + "jr",
                          help="Weight of R = ½ mean ‖J‖²_F, J = d logits / d normalised input (the "
                               "paper's convention; the paper: 0.01). JacobianReg on [0, 1] pixels would "
                               "give 1/std² times this R.")
        c[3].number_input("Projections n_proj", min_value=0, step=1, key=K + "n_proj",
                          help="Random projections per sample (Algorithm 1); 0 = exact Jacobian.")
        c = st.columns(4)
        c[0].selectbox("JR estimator", JR_METHODS, key=K + "jr_method",
                       help="auto: picked per model (Algorithm 1 for image inputs; the model card says "
                            "which); vjp: Algorithm 1, gradient noise independent of the input size; jvp: "
                            "forward mode, a cheaper step but gradient noise that grows with the input size "
                            "(2x Algorithm 1's on a trained LeNet', 46x on ResNet-18); exact: all C rows, "
                            "about 8x a plain step on LeNet'.")
        c[1].selectbox("Adversarial training", ADV_ATTACKS, key=K + "adv")
        c[2].number_input("Adversarial ε (pixels)", min_value=0.0, max_value=1.0, format="%.3g",
                          key=K + "adv_eps")
        c[3].number_input("Adversarial mix", min_value=0.0, max_value=1.0, format="%.2f", key=K + "adv_mix",
                          help="Loss = (1 - mix) CE(x) + mix CE(x_adv).")
        c = st.columns(4)
        c[0].number_input("PGD steps", min_value=1, step=1, key=K + "adv_steps")
        c[1].number_input("Seed", min_value=0, step=1, key=K + "seed")
        c[2].selectbox("Device", _devices(), key=K + "device",
                       help="auto picks a GPU when there is one (on Ray: the GPU the worker gets).")
        c[3].number_input("Test samples per epoch", min_value=0, step=100, key=K + "eval_samples",
                          help="Evaluated after every epoch for the curves (0 = none).")
        with st.expander("Advanced"):
            st.number_input("Batches per epoch (0 = all)", min_value=0, step=1, key=K + "limit_batches",
                            help="Cut epochs short, for a quick try.")
            st.number_input("Snapshot every N epochs (0 = none)", min_value=0, step=1,
                            key=K + "snapshot_every",
                            help="Keep the model after every N-th epoch (and the last) in the run folder, "
                                 "for the film of the cells through training on the Cells page. On by "
                                 "default for small models.")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
    if submitted:
        try:
            job = jobs.start_job(_config_from_form(), extra_args=remote.backend_args(common.ray_address()))
        except JacregError as exc:
            common.show_error(exc)
        else:
            st.session_state[WATCH] = job.id
            st.toast(f"Started {common.md(job.name)}")
    try:
        cmd = TrainConfig(**{k: v for k, v in _config_from_form().items() if v is not None}).command()
    except (TypeError, JacregError):
        cmd = None
    if cmd:
        with st.expander("The same run from the command line"):
            st.code(cmd.replace(" --out model.safetensors", " --out runs/NAME/model.safetensors"),
                    language="bash")


def _job_rows(all_jobs: list[jobs.Job]) -> list[dict[str, Any]]:
    rows = []
    for j in all_jobs:
        status = j.status()
        prog = j.progress(status=status)
        last = prog.last_epoch or {}
        rows.append({"name": j.name, "state": status.get("state"),
                     "epoch": f"{prog.epoch}/{prog.epochs}" if prog.epochs else "",
                     "progress": prog.fraction,
                     "test accuracy": last.get("test_accuracy"),
                     "mean ||J||_F": last.get("jacobian_norm_mean"),
                     "regularizers": jobs.regularizer_label(j.config),
                     "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(status.get("created") or 0)),
                     "id": j.id})
    return rows


def _select_run(job_id: str) -> None:
    """Button callback: runs before the page, so it may set the sidebar's selection."""
    common.list_models_cached.clear()
    common.select([f"run:{job_id}"])


def _job_panel(job_id: str, was_active: bool) -> None:
    try:
        job = jobs.get_job(job_id)
    except JacregError:
        st.info("This run was deleted.")
        return
    status = job.status()
    state = status.get("state", "failed")
    events = job.events()
    prog = job.progress(events, status)
    cfg = job.config
    active = state in jobs.ACTIVE_STATES
    if was_active and not active:
        common.list_models_cached.clear()
        st.rerun()  # stop polling, refresh the model list
    stopping = active and status.get("stop_requested")
    badge = {"running": ":blue-badge[running]", "queued": ":gray-badge[queued]",
             "finished": ":green-badge[finished]", "failed": ":red-badge[failed]",
             "stopped": ":orange-badge[stopped]"}.get(state, state)
    st.markdown(f"#### {common.md(job.name)} {badge}" + (" :orange-badge[stopping...]" if stopping else ""))
    where = remote.where_ran(events) or f"device {cfg.get('device')}"
    st.caption(f"{cfg.get('arch')} on {cfg.get('dataset')} · regularizers: {jobs.regularizer_label(cfg)} · "
               f"{where} · run folder `{job.dir}`")
    if active:
        text = (f"step {prog.step}/{prog.total or '?'} · epoch {prog.epoch}/{prog.epochs or '?'} · "
                f"ETA {_duration(prog.eta_s)}")
        st.progress(prog.fraction, text=text)
    elif state == "finished":
        last = prog.last_epoch or {}
        msg = f"Finished {prog.epoch} epoch(s)"
        if last.get("test_accuracy") is not None:
            msg += f": test accuracy {last['test_accuracy']:.2%}, mean ‖J‖_F {last['jacobian_norm_mean']:.3g}"
        st.success(msg)
    elif state == "failed":
        reason = status.get("message") or job.error_message(status) or "unknown reason"
        st.error("The run failed: " + common.md(reason))
        tail = job.log_tail(15)
        if tail:
            with st.expander("Log"):
                st.code(tail, language="text")
    elif state == "stopped":
        st.warning(f"Stopped after {prog.epoch} epoch(s). Resume continues from the last checkpoint.")

    bar = st.container(horizontal=True)
    if active and bar.button("Stop", key=f"stop_{job.id}", icon=":material/stop:",
                                    disabled=bool(stopping)):
        jobs.stop_job(job.id, wait=False)
        st.rerun()
    can_resume = state in ("stopped", "failed") and job.checkpoint_path.is_file() and \
        prog.epoch < (prog.epochs or int(cfg.get("epochs") or 0))
    if can_resume and bar.button("Resume", key=f"resume_{job.id}", icon=":material/replay:"):
        try:
            jobs.resume_job(job.id)
        except JacregError as exc:
            common.show_error(exc)
        else:
            st.rerun()
    has_model = job.checkpoint_path.is_file()
    for label, page in (("Open on Cells", "cells.py"), ("Open on Robustness", "robustness.py")):
        if bar.button(label, key=f"{page}_{job.id}", disabled=not has_model or not (VIEWS / page).is_file(),
                      help="Select this model and switch page" if has_model else "No checkpoint yet",
                      on_click=_select_run, args=(job.id,)):
            st.switch_page(f"views/{page}")
    if not active and bar.button("Delete run", key=f"delete_{job.id}", icon=":material/delete:"):
        try:
            jobs.delete_job(job.id)
        except JacregError as exc:
            common.show_error(exc)
        else:
            st.session_state.pop(WATCH, None)
            common.list_models_cached.clear()
            st.rerun()

    history = jobs.epoch_history(events)
    steps = jobs.step_history(events)
    if history or steps:
        fig = training_figures.training_figure(history, steps, total_steps=prog.total or None,
                                             jr_weight=float(cfg.get("jr") or 0) or None)
        st.plotly_chart(fig, key=f"curves_{job.id}", config={"displaylogo": False})
    elif active:
        st.info("Waiting for the first steps (loading data, building the model)...")


st.title(":material/model_training: Train")
st.markdown(
    "Train a model in the background with any mix of the paper's regularizers: L2 weight decay, "
    "dropout, Jacobian regularization (λ_JR · ½‖J‖²_F with n_proj random projections) and "
    "adversarial training. Each run is a separate process writing to `runs/<id>/`: it keeps going "
    "if you close the page, and its model joins the model list after its first epoch."
)
_init_form()
_form()

st.divider()
st.subheader("Runs")
all_jobs = jobs.list_jobs()
if not all_jobs:
    st.info("No runs yet: pick a preset above and start one.")
else:
    st.dataframe(_job_rows(all_jobs), hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0.0,
                                                                           max_value=1.0, format="percent"),
                                "test accuracy": st.column_config.NumberColumn(format="percent"),
                                "mean ||J||_F": st.column_config.NumberColumn(format="%.3g")})
    ids = [j.id for j in all_jobs]
    names = {j.id: f"{j.name} · {j.id}" for j in all_jobs}
    if st.session_state.get(WATCH) not in ids:
        running = [j.id for j in all_jobs if j.is_active()]
        st.session_state[WATCH] = running[0] if running else ids[0]
    watched = st.selectbox("Watch run", ids, key=WATCH, format_func=names.get)
    is_active = jobs.get_job(watched).is_active()
    st.fragment(_job_panel, run_every=POLL_S if is_active else None)(watched, is_active)
