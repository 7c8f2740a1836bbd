"""Figures of the reproduction (PNG): the paper's Fig. 2 and Fig. 3 with error bars over seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes

from .style import new_figure, png_bytes

__all__ = ["Series", "fig2_png", "fig3_png"]


@dataclass(frozen=True)
class Series:
    """One line of a panel: x values, mean and standard deviation over seeds (sd None: one seed)."""

    label: str
    x: Sequence[float]
    mean: Sequence[float | None]
    sd: Sequence[float] | None = None


#: Above this many points a series is a plain line with a shaded ±sd band (markers and error bars
#: would hide one another, e.g. 150 epochs in Fig. 2).
DENSE = 30


def _plot(ax: Axes, series: Sequence[Series]) -> None:
    for s in series:
        x, mean = list(s.x), [float("nan") if v is None else v for v in s.mean]
        if len(x) <= DENSE:
            ax.errorbar(x, mean, yerr=list(s.sd) if s.sd is not None else None, marker="o", ms=3,
                        label=s.label, capsize=2)
            continue
        (line,) = ax.plot(x, mean, lw=1.2, label=s.label)
        if s.sd is not None:
            sd = [float("nan") if v is None else v for v in s.sd]
            lo = [m - d for m, d in zip(mean, sd, strict=True)]
            hi = [m + d for m, d in zip(mean, sd, strict=True)]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.25, lw=0)


def fig2_png(accuracy: Sequence[Series], jacobian: Sequence[Series], epochs: int, dpi: int = 90) -> bytes:
    """Fig. 2: test accuracy and ||J||_F per epoch for the exact regularizer and random projections,
    with the learning-rate quenches (1/3 and 2/3 of ``epochs``) dashed."""
    fig = new_figure(9, 3.4)
    ax_acc, ax_j = fig.subplots(1, 2)
    _plot(ax_acc, accuracy)
    _plot(ax_j, jacobian)
    for ax in (ax_acc, ax_j):
        for q in (epochs / 3, 2 * epochs / 3):
            ax.axvline(q, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("epoch (dashed: learning-rate quenches)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_acc.set_ylabel("test accuracy")
    ax_j.set_ylabel("mean ‖J‖_F (normalised input)")
    fig.suptitle("Fig. 2: exact Jacobian regularization vs random projections")
    return png_bytes(fig, dpi=dpi)


def fig3_png(panels: Mapping[str, Sequence[Series]], xlabels: Mapping[str, str], dpi: int = 90,
             title: str = "Fig. 3: robustness to white noise and adversarial perturbations") -> bytes:
    """Fig. 3: accuracy against white noise, FGSM epsilon and PGD iterations, one panel each."""
    fig = new_figure(13, 3.8)
    axes = fig.subplots(1, len(panels))
    for (name, series), ax in zip(panels.items(), axes, strict=True):
        _plot(ax, series)
        ax.set_xlabel(xlabels[name])
        ax.set_ylabel("test accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return png_bytes(fig, dpi=dpi)
