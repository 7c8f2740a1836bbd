"""Shared pieces of the pages: the sidebar (models, dataset, device, backend) and cached model loading.

Only widgets and caching live here; every computation is in :mod:`jacreg`.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` from anywhere
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
import torch  # noqa: E402

from jacreg import catalog, data  # noqa: E402
from jacreg.catalog import ModelEntry  # noqa: E402
from jacreg.checkpoints import file_hash, load_checkpoint  # noqa: E402
from jacreg.device import available, describe, pick  # noqa: E402
from jacreg.errors import ConfigError, JacregError  # noqa: E402
from jacreg.jobs import remote  # noqa: E402

SELECTED = "selected_models"   # session key: list of ModelEntry keys, shared across pages
DEVICE = "device"              # session key: device name ("auto", "cpu", "cuda:0", ...)
DATASET = "dataset"            # session key: dataset name
UPLOADS = "uploads"            # session key: {key: {"name", "digest", "data", "meta"}}
BACKEND = "backend"            # session key: "local" or "Ray": where training and robustness jobs run
RAY_ADDRESS = "ray_address"    # session key: the Ray head's address ([ray://]HOST:PORT)
RAY_CHECK = "ray_check"        # session key: (address, message, ok) of the last "Check"
BACKENDS = ("local", "Ray")
FIRST_VIEW = "first_view"      # session key: the zoo's first view (catalog.first_view) this session opened on
_FIRST_VIEW_APPLIED = "_first_view_applied"


def uploads() -> dict[str, dict[str, Any]]:
    """This session's uploaded checkpoints (never shared with other sessions)."""
    return st.session_state.setdefault(UPLOADS, {})


def add_upload(name: str, payload: bytes, arch: str | None = None, dataset: str | None = None) -> ModelEntry:
    """Validate an uploaded checkpoint with the safe loader and add it to this session's models.

    Raises:
        JacregError: the file is refused (the caller shows ``st.error``).
    """
    digest = file_hash(payload)
    _, meta = load_upload(digest, payload, arch, dataset, "cpu")
    key = f"upload:{digest[:12]}"
    display = Path(name).stem
    uploads()[key] = {"name": display, "digest": digest, "data": payload, "meta": meta,
                      "arch": arch, "dataset": dataset}
    return ModelEntry(key, display, "upload", None, meta)


def entries() -> list[ModelEntry]:
    """Zoo models, trained runs, then this session's uploads."""
    out = list_models_cached()
    out += [ModelEntry(k, u["name"], "upload", None, u["meta"]) for k, u in uploads().items()]
    return out


@st.cache_data(ttl=5, show_spinner=False)
def list_models_cached() -> list[ModelEntry]:
    return catalog.list_models()


@st.cache_resource(show_spinner="Loading model...", max_entries=32)
def _load_path(path: str, mtime: float, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    return load_checkpoint(path, device=device)


@st.cache_resource(show_spinner="Checking upload...", max_entries=16, scope="session")
def load_upload(digest: str, _payload: bytes, arch: str | None, dataset: str | None,
                device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load uploaded bytes once per session and content hash (weights_only, strict)."""
    return load_checkpoint(_payload, arch=arch, dataset=dataset, device=device)


def load_entry(entry: ModelEntry, device: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (eval mode, cached: do not mutate it) and its card."""
    dev = str(pick(device or current_device()))
    if entry.source == "upload":
        u = uploads()[entry.key]
        return load_upload(u["digest"], u["data"], u.get("arch"), u.get("dataset"), dev)
    assert entry.path is not None
    return _load_path(str(entry.path), entry.path.stat().st_mtime, dev)


def current_device() -> str:
    return st.session_state.get(DEVICE, "auto")


def selected_entries() -> list[ModelEntry]:
    """The models picked in the sidebar, in order."""
    by_key = {e.key: e for e in entries()}
    return [by_key[k] for k in st.session_state.get(SELECTED, []) if k in by_key]


def select(keys: list[str]) -> None:
    """Set the shared model selection (e.g. 'open on the Cells page')."""
    st.session_state[SELECTED] = list(dict.fromkeys(keys))


QUERY_MODELS = "models"    # URL query parameter: comma-separated model keys (a shareable selection)
QUERY_DATASET = "dataset"  # URL query parameter: dataset name
_QUERY_APPLIED = "_query_selection_applied"


def apply_query_selection(keys: list[str]) -> None:
    """Once per session, take the model selection and dataset from the URL
    (``?models=zoo:lenet-none,zoo:lenet-jr&dataset=mnist-5k``), so a page's view can be shared.
    Unknown keys are ignored. Called by :func:`sidebar` before its widgets exist."""
    if st.session_state.get(_QUERY_APPLIED):
        return
    st.session_state[_QUERY_APPLIED] = True
    wanted = [k for k in str(st.query_params.get(QUERY_MODELS, "")).split(",") if k in keys]
    if wanted:
        st.session_state[SELECTED] = list(dict.fromkeys(wanted))
    ds = st.query_params.get(QUERY_DATASET)
    if ds in data.names():
        st.session_state[DATASET] = ds


@st.cache_data(ttl=5, show_spinner=False)
def _first_view_cached(folder: str) -> dict[str, Any] | None:
    return catalog.first_view(folder)


def apply_first_view(keys: list[str]) -> None:
    """Once per session, when it has no model selection yet and the URL has no parameters: select
    the zoo's first view's two models (``models/first_view.json``, :func:`jacreg.catalog.first_view`)
    and its dataset, and remember the view (``st.session_state[FIRST_VIEW]``) for the Cells page.
    Called by :func:`sidebar` before its widgets exist."""
    if st.session_state.get(_FIRST_VIEW_APPLIED):
        return
    st.session_state[_FIRST_VIEW_APPLIED] = True
    if st.session_state.get(SELECTED) or len(st.query_params):
        return
    view = _first_view_cached(str(catalog.models_dir()))
    if view is None:
        return
    wanted = [f"zoo:{name}" for name in view["models"]]
    if not all(k in keys for k in wanted):
        return
    st.session_state[SELECTED] = wanted
    if view["dataset"] in data.names() and DATASET not in st.session_state:
        st.session_state[DATASET] = view["dataset"]
    st.session_state[FIRST_VIEW] = view


def first_view() -> dict[str, Any] | None:
    """The first view this session opened on (see :func:`apply_first_view`), or None."""
    return st.session_state.get(FIRST_VIEW)


def sidebar() -> None:
    """The one sidebar every page shares: model picker, dataset, device."""
    all_entries = entries()
    labels = {e.key: e.label for e in all_entries}
    apply_query_selection(list(labels))
    apply_first_view(list(labels))
    current = [k for k in st.session_state.get(SELECTED, []) if k in labels]
    if not current and all_entries:
        current = [all_entries[0].key]
    st.session_state[SELECTED] = current
    with st.sidebar:
        if all_entries:
            st.multiselect("Models", options=list(labels), format_func=labels.get, key=SELECTED,
                           help="Zoo models, your trained runs and your uploads. The same selection "
                                "is used on every page.")
        else:
            st.info("No models yet: train one on the Train page, or use the zoo.")
        st.selectbox("Dataset", data.names(), key=DATASET,
                     index=data.names().index(st.session_state.get(DATASET, "mnist-5k"))
                     if st.session_state.get(DATASET, "mnist-5k") in data.names() else 0)
        devs = available()
        if st.session_state.get(DEVICE) not in devs:
            st.session_state[DEVICE] = "auto"
        st.selectbox("Device", devs, key=DEVICE)
        st.caption(f"Running on {describe(pick(st.session_state[DEVICE]))}")
        _backend_setting()


def _backend_label(backend: str) -> str:
    return "here" if backend == "local" else "on Ray"


def _backend_setting() -> None:
    """Local or a Ray cluster for the long jobs (Train, Robustness), with a check of the address."""
    st.selectbox("Jobs run", BACKENDS, key=BACKEND, format_func=_backend_label,
                 help="Training and robustness runs: on this machine, or on a Ray cluster (e.g. a GPU "
                      "server running `ray start --head`); their curves and checkpoints come back here.")
    if st.session_state.get(BACKEND) != "Ray":
        return
    st.session_state.setdefault(RAY_ADDRESS, os.environ.get(remote.ADDRESS_ENV, ""))
    address = st.text_input("Ray address", key=RAY_ADDRESS, placeholder="ray://gpu-server:10001",
                            help="ray://HOST:PORT: the head's client port (from any machine); HOST:PORT: "
                                 "its --port (from a node of the cluster).").strip()
    if st.button("Check", key="ray_check_button", icon=":material/lan:", disabled=not address):
        try:
            st.session_state[RAY_CHECK] = (address, remote.check_cluster(address).describe(), True)
        except JacregError as exc:
            st.session_state[RAY_CHECK] = (address, str(exc), False)
    checked = st.session_state.get(RAY_CHECK)
    if checked and checked[0] == address:
        (st.success if checked[2] else st.error)(checked[1])


def ray_address() -> str | None:
    """The Ray address the long jobs use, or None when they run here.

    Raises:
        ConfigError: Ray is chosen without an address, or with a malformed one.
    """
    if st.session_state.get(BACKEND) != "Ray":
        return None
    address = str(st.session_state.get(RAY_ADDRESS) or "").strip()
    if not address:
        raise ConfigError("jobs run on Ray, but no Ray address is set: enter it in the sidebar "
                          "(e.g. ray://gpu-server:10001), or let jobs run here")
    return remote.ray_address(address)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:])")


def md(text: object) -> str:
    """User text (a model, run or file name, a message quoting one) made inert for Markdown: every
    character Markdown, Streamlit's directives or LaTeX would interpret is escaped, so a name like
    ``![x](http://host/p.png)`` is shown as typed and makes no browser fetch anything."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def show_error(exc: BaseException) -> None:
    """Show a user error as one st.error line (a JacregError's message; others with their type),
    as text: messages quote file names and values users control."""
    if isinstance(exc, JacregError):
        st.error(md(exc))
    else:
        st.error(md(f"{type(exc).__name__}: {exc}"))
