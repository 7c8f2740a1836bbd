"""The Cells page's progressive view: a coarse preview first when the full map of slow models (a big
network at 224x224) is estimated to take long, replaced by the full map in the same run.

Widgets only: the estimate and the preview come from :mod:`jacreg.cells.preview`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st
import torch

from jacreg import cells
from jacreg.figures import cells as plots

DONE = "cells_computed"           # session key: the views whose full map this session has computed
KEEP = 64                         # how many of them are remembered


@st.cache_data(show_spinner="Timing the models...", max_entries=32)
def _seconds_per_point(stamps: tuple[str, ...], dataset: str, _models: list, _x0: torch.Tensor) -> float:
    return cells.seconds_per_point(_models, _x0)


@st.cache_data(show_spinner=False, max_entries=16)
def _preview(stamps: tuple[str, ...], spec: tuple[tuple[str, Any], ...], extent: float, res: int,
             _models: list, _plane: cells.Plane) -> cells.CrossSection:
    return cells.preview_section(_models, _plane, extent, res)


def mark_done(view: tuple[Any, ...]) -> None:
    """Remember that this session has the full map of ``view`` (no preview for it again)."""
    done = st.session_state.setdefault(DONE, [])
    done[:] = [*done[-(KEEP - 1):], repr(view)]


def show_first(stamps: tuple[str, ...], spec: tuple[tuple[str, Any], ...], dataset: str, extent: float,
               res: int, models: list[torch.nn.Module], x0: torch.Tensor, plane: Callable[[], cells.Plane],
               names: list[str], class_names: list[str] | None) -> tuple[Any, str]:
    """When the full map is estimated to take longer than :func:`jacreg.cells.preview_after` seconds
    and this session has not computed it yet, show a coarse preview in a placeholder that the caller
    empties once the full map is there.

    Args:
        plane: builds the view's plane (called only when a preview is shown).

    Returns:
        The placeholder (None when no preview was shown) and a sentence for the map's caption.
    """
    if repr((stamps, spec, extent, res)) in st.session_state.get(DONE, []):
        return None, ""
    estimate = _seconds_per_point(stamps, dataset, models, x0) * res * res
    small = cells.preview_resolution(res)
    if estimate <= cells.preview_after() or small >= res:
        return None, ""
    holder = st.empty()
    with holder.container():
        pcs = _preview(stamps, spec, extent, res, models, plane())
        st.plotly_chart(plots.cells_figure(pcs, names, class_names, height=430 if len(names) > 2 else 480),
                        key="cells_preview", theme=None)
        st.caption(f"Coarse preview ({small}x{small}, no circle); refining to {res}x{res} "
                   f"(estimated up to {estimate:.0f} s)...")
    return holder, (f" Shown first as a coarse {small}x{small} preview (the full map was estimated at up to "
                    f"{estimate:.0f} s).")
