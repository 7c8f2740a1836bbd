"""jacreg.reproduce.report: what report.md says about the figures' circles."""

from __future__ import annotations

import math

from jacreg import reproduce
from jacreg.reproduce.report import write_report


def test_a_circle_beyond_the_search_says_how_far_was_searched(tmp_path):
    parts = {"command": "python -m jacreg reproduce", "trained": 0, "total": 3, "seconds": 1.0,
             "figure_cells": [
                 {"figure": "fig_s2_adversarial.png", "model": "Jacobian", "extent": 8.0, "radius": math.inf,
                  "searched": 32.0, "prediction": 7},
                 {"figure": "fig_s2_adversarial.png", "model": "L2", "extent": 8.0, "radius": 2.4913,
                  "searched": 2.4913, "prediction": 7}]}
    text = write_report(tmp_path, reproduce.Options(out=str(tmp_path)), parts)
    assert "| fig_s2_adversarial.png | Jacobian | > 32.00 |" in text  # as far as the search went
    assert "| fig_s2_adversarial.png | L2 | 2.49 |" in text
    assert "inf" not in text.split("In-plane radius")[1]
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == text
