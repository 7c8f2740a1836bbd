"""Plotly figures of training runs: live curves for the Train page, model-card curves and
side-by-side comparisons for the Models page.

Inputs are the plain dicts a run produces: ``epoch`` records (a job's ``epoch`` events, or the
``history`` of a model card) and ``step`` records (a job's ``step`` events). Nothing here trains or
loads a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..training import QUENCHES
from .style import model_colors

__all__ = ["QUENCHES", "comparison_figure", "quench_steps", "training_figure"]

_PANELS = ("Loss", "CE and JR term R = ½‖J‖²", "Accuracy", "Mean ‖J‖_F (test)", "Learning rate")


def _vals(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [r.get(key) for r in rows]


def _has(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    return any(r.get(key) is not None for r in rows)


def quench_steps(steps: Sequence[Mapping[str, Any]], total_steps: int | None = None) -> list[int]:
    """Steps where the learning rate drops: the schedule's quench points of ``total_steps`` when
    known, else the logged steps at which ``lr`` fell."""
    if total_steps:
        return [round(q * total_steps) for q in QUENCHES]
    found: list[int] = []
    prev = None
    for r in steps:
        lr = r.get("lr")
        if lr is not None and prev is not None and lr < prev * 0.999:
            found.append(int(r["step"]))
        if lr is not None:
            prev = lr
    return found


def training_figure(epochs: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]] = (), *,
                    total_steps: int | None = None, jr_weight: float | None = None,
                    title: str | None = None, height: int = 620) -> go.Figure:
    """The five training panels: loss, CE vs JR term, train/test accuracy, mean ‖J‖_F, lr.

    Args:
        epochs: one record per epoch (``train_loss``, ``train_ce``, ``train_jr``, ``train_accuracy``,
            ``test_accuracy``, ``jacobian_norm_mean``, ``lr``, optionally ``step``).
        steps: per-step records (``step``, ``loss``, ``ce``, ``jr``, ``accuracy``, ``lr``), may be empty
            (a model card keeps only epochs).
        total_steps: the run's planned steps: fixes the x range and places quench markers.
        jr_weight: lambda_JR; when given, the JR panel also shows lambda_JR * R (its share of the loss).
        title: figure title.

    The x axis is the optimiser step when the records carry one, else the epoch.
    """
    epochs = list(epochs)
    steps = list(steps)
    by_step = bool(steps) or (epochs and all(r.get("step") is not None for r in epochs))
    ex = _vals(epochs, "step") if by_step else _vals(epochs, "epoch")
    sx = _vals(steps, "step")
    xlabel = "step" if by_step else "epoch"
    fig = make_subplots(rows=2, cols=3, subplot_titles=_PANELS, horizontal_spacing=0.07,
                        vertical_spacing=0.16)
    cells = {"loss": (1, 1), "jr": (1, 2), "acc": (1, 3), "norm": (2, 1), "lr": (2, 2)}

    def add(panel: str, x: list[Any], y: list[Any], name: str, *, mode: str = "lines",
            dash: str | None = None, color: str | None = None) -> None:
        if not any(v is not None for v in y):
            return
        row, col = cells[panel]
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode=mode, legendgroup=panel,
                                 line={"dash": dash, "color": color}, marker={"size": 6}),
                      row=row, col=col)

    emode = "lines+markers"
    add("loss", sx, _vals(steps, "loss"), "loss (step)", color="#9ecae1")
    add("loss", ex, _vals(epochs, "train_loss"), "train loss (epoch)", mode=emode, color="#08519c")
    add("jr", sx, _vals(steps, "ce"), "CE (step)", color="#fdae6b")
    add("jr", sx, _vals(steps, "jr"), "R (step)", color="#a1d99b")
    add("jr", ex, _vals(epochs, "train_ce"), "CE (epoch)", mode=emode, color="#e6550d")
    add("jr", ex, _vals(epochs, "train_jr"), "R (epoch)", mode=emode, color="#31a354")
    if jr_weight and _has(epochs, "train_jr"):
        add("jr", ex, [None if v is None else jr_weight * v for v in _vals(epochs, "train_jr")],
            "λ·R (epoch)", mode=emode, dash="dot", color="#006d2c")
    add("acc", sx, _vals(steps, "accuracy"), "train acc (step)", color="#bcbddc")
    add("acc", ex, _vals(epochs, "train_accuracy"), "train acc (epoch)", mode=emode, color="#54278f")
    add("acc", ex, _vals(epochs, "test_accuracy"), "test acc (epoch)", mode=emode, color="#d62728")
    add("norm", ex, _vals(epochs, "jacobian_norm_mean"), "mean ‖J‖_F", mode=emode, color="#8c510a")
    if steps:
        add("lr", sx, _vals(steps, "lr"), "lr", color="#636363")
    else:
        add("lr", ex, _vals(epochs, "lr"), "lr", mode=emode, color="#636363")
    if _has(steps, "ce") or _has(epochs, "train_ce"):
        fig.update_yaxes(type="log", row=1, col=2)
    if _has(steps, "lr") or _has(epochs, "lr"):
        fig.update_yaxes(type="log", row=2, col=2)
    fig.update_yaxes(range=[0, 1.02], row=1, col=3)
    if by_step:
        for q in quench_steps(steps, total_steps):
            for panel in ("loss", "lr"):
                row, col = cells[panel]
                fig.add_vline(x=q, line_dash="dash", line_color="#999", row=row, col=col)
        if total_steps:
            for row, col in cells.values():
                fig.update_xaxes(range=[0, total_steps * 1.02], row=row, col=col)
    for row, col in cells.values():
        fig.update_xaxes(title_text=xlabel, row=row, col=col)
    fig.update_layout(height=height, title=title, margin={"l": 40, "r": 20, "t": 70 if title else 40,
                                                           "b": 40},
                      legend={"orientation": "v", "x": 0.74, "y": 0.40, "xanchor": "left", "yanchor": "top",
                              "font": {"size": 11}, "tracegroupgap": 2})
    return fig


def comparison_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], *,
                      height: int = 380) -> go.Figure:
    """Test accuracy and mean ‖J‖_F per epoch for several models on shared axes.

    Args:
        histories: model name -> its epoch records (a model card's ``history``).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Test accuracy", "Mean ‖J‖_F (test)"))
    colors = model_colors(list(histories))
    for name, rows in histories.items():
        color = colors[name]
        ep = _vals(rows, "epoch")
        for col, key in ((1, "test_accuracy"), (2, "jacobian_norm_mean")):
            ys = _vals(rows, key)
            if any(v is not None for v in ys):
                fig.add_trace(go.Scatter(x=ep, y=ys, name=name, legendgroup=name, showlegend=col == 1,
                                         mode="lines+markers", line={"color": color}), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40})
    return fig
