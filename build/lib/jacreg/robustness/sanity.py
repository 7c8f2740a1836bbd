"""A sanity badge for robustness curves: gradient masking, noise that helps, weak gradients."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import ATTACKS

__all__ = ["CHANCE_MARGIN", "LARGE_LINF_EPS", "sanity_check"]

#: A PGD result at an L-inf epsilon at least this large must reach chance accuracy.
LARGE_LINF_EPS = 0.5
#: Accuracy above 1/C + this margin at a large epsilon triggers the gradient-masking warning.
CHANCE_MARGIN = 0.05


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.25 / max(n, 1)) / max(n, 1))


def sanity_check(results: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings about curves that look wrong (an empty list when nothing is suspicious).

    * **Gradient masking** (ART's ``SecurityCurve`` test): a PGD curve with an epsilon at least
      0.5 (L-inf; half the L2 diameter for L2) — a budget that reaches an uninformative image —
      must drive accuracy to chance, ``<= 1/C + 0.05``; otherwise the gradients are probably
      masked or obfuscated and the curves overstate robustness. :func:`masking_probe` runs it.
    * **Noise that helps**: a white-noise curve whose *raw* accuracy (one draw per epsilon, not made
      monotone) rises with epsilon by more than two standard errors.
    * **Weak gradients**: at an epsilon both share, PGD weaker than FGSM, or a gradient attack
      weaker than noise of the same norm, by more than two standard errors.

    Comparisons are made between results with the same ``"model"`` key (set it when the results
    come from several models).
    """
    items = [results] if isinstance(results, Mapping) else list(results)
    warnings: list[str] = []
    for r in items:
        who = f"{r['model']}: " if r.get("model") else ""
        n = int(r.get("samples") or 0)
        if n == 0:
            continue
        eps, acc = list(r["epsilons"]), list(r["accuracy"])
        spec = ATTACKS.get(r.get("attack", ""))
        if spec is not None and r["attack"] in ("pgd", "pgd-l2") and r.get("num_classes"):
            chance = 1.0 / int(r["num_classes"])
            if r["attack"] == "pgd":
                large = [k for k, e in enumerate(eps) if e >= LARGE_LINF_EPS]
            else:
                d = r.get("input_numel")
                large = [k for k, e in enumerate(eps) if d and e >= 0.5 * math.sqrt(d)]
            if large:
                k = large[-1]
                if acc[k] > chance + CHANCE_MARGIN:
                    warnings.append(
                        f"{who}possible gradient masking: {spec.title} at epsilon {eps[k]:g} leaves "
                        f"{acc[k]:.0%} accuracy, above chance ({chance:.0%}); a budget this large reaches "
                        "an uninformative image, so a working attack gets to chance. The curves may "
                        "overstate robustness: try more steps, restarts, or a gradient-free attack.")
        raw = r.get("raw_accuracy")
        if spec is not None and spec.random and raw:
            for k in range(1, len(raw)):
                a, b = raw[k - 1], raw[k]
                if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)):
                    continue
                if b - a > 2 * math.sqrt(2) * _stderr(a, n) + 1e-12:
                    warnings.append(
                        f"{who}{spec.title}: accuracy rises with epsilon, from {a:.1%} at {eps[k - 1]:g} to "
                        f"{b:.1%} at {eps[k]:g} (more than noise on {n} samples explains); the model may "
                        "be unstable under noise, or use more samples.")
                    break
    # cross-attack comparisons, per model
    by_model: dict[Any, dict[str, Mapping[str, Any]]] = {}
    for r in items:
        if int(r.get("samples") or 0) > 0:
            by_model.setdefault(r.get("model"), {})[r.get("attack", "")] = r
    for model_key, rs in by_model.items():
        who = f"{model_key}: " if model_key else ""
        pairs = [("pgd", "fgsm", "PGD is weaker than FGSM"),
                 ("pgd", "noise-linf", "PGD is weaker than L-inf noise"),
                 ("fgsm", "noise-linf", "FGSM is weaker than L-inf noise"),
                 ("pgd-l2", "noise", "L2 PGD is weaker than L2 noise")]
        for strong, weak, what in pairs:
            if strong not in rs or weak not in rs:
                continue
            s, w = rs[strong], rs[weak]
            common = sorted(set(s["epsilons"]) & set(w["epsilons"]))
            for e in common:
                if e == 0:
                    continue
                a_s = s["accuracy"][s["epsilons"].index(e)]
                a_w = w["accuracy"][w["epsilons"].index(e)]
                n = min(int(s["samples"]), int(w["samples"]))
                if a_s - a_w > 2 * math.sqrt(2) * _stderr(a_w, n):
                    warnings.append(f"{who}{what} at epsilon {e:g} ({a_s:.1%} vs {a_w:.1%} accuracy): "
                                    "a sign of gradient masking.")
                    break
    return warnings
