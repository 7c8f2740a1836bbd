"""jacreg dashboard: ``streamlit run app/main.py``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st  # noqa: E402
import torch  # noqa: E402

from app import common  # noqa: E402
from jacreg.device import thread_budget  # noqa: E402

VIEWS = Path(__file__).resolve().parent / "views"

# (file, title, icon); pages appear in this order.
PAGES = [
    ("home.py", "Home", ":material/home:"),
    ("cells.py", "Decision cells", ":material/grid_on:"),
    ("robustness.py", "Robustness", ":material/shield:"),
    ("train.py", "Train", ":material/model_training:"),
    ("models.py", "Models", ":material/inventory_2:"),
    ("jacobian.py", "Jacobian", ":material/functions:"),
]


def main() -> None:
    # the page's computations share the cores with background jobs (each gets its own share)
    if torch.get_num_threads() != thread_budget("page"):
        torch.set_num_threads(thread_budget("page"))
    st.set_page_config(page_title="jacreg", page_icon=":material/blur_circular:", layout="wide")
    pages = [st.Page(VIEWS / f, title=t, icon=i, default=(f == "home.py"))
             for f, t, i in PAGES if (VIEWS / f).is_file()]
    nav = st.navigation(pages)
    common.sidebar()
    nav.run()


main()
