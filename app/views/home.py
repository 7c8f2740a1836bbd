"""Home: what jacreg is, and the models available."""

from __future__ import annotations

import streamlit as st

from app import common
from jacreg.reproduce import read_table1, table1_display

st.title("jacreg: robust learning with Jacobian regularization")
st.markdown(
    """
Jacobian regularization (Hoffman, Roberts & Yaida, 2019) adds
$\\frac{\\lambda_{JR}}{2}\\,\\lVert J(x)\\rVert_F^2$ to the loss, where $J = \\partial z/\\partial x$
is the Jacobian of the logits with respect to the (normalised) input, estimated with a single
random projection per sample. Penalising it enlarges the **decision cells** around the data,
so models stay accurate under white noise and adversarial attacks.

**Pages**
- **Decision cells**: 2-D cross sections of the input space through a test sample
  (random or adversarial plane), with the distance to the nearest boundary.
- **Robustness**: accuracy against attack strength (white noise, FGSM, PGD, CW, ...),
  for zoo models, your trained runs and uploaded checkpoints.
- **Train**: train plain, L2, dropout, JR or adversarially trained models in the background.
- **Models**: model cards, curves and downloads.
- **Jacobian**: $\\lVert J\\rVert_F$ over test data; random projections against the exact value.
"""
)

models = common.entries()
st.subheader("Models")
if not models:
    st.info("No models yet: train one on the Train page, or retrain the zoo with "
            "`python -m jacreg reproduce --zoo`.")
else:
    rows = []
    for e in models:
        metrics = e.meta.get("metrics", {}) if isinstance(e.meta, dict) else {}
        rows.append({
            "model": e.name,
            "source": e.source,
            "arch": e.meta.get("arch", "?"),
            "dataset": e.meta.get("dataset", "?"),
            "clean accuracy": metrics.get("clean_accuracy"),
            "mean ||J||_F": metrics.get("jacobian_norm_mean"),
        })
    st.dataframe(rows, hide_index=True, width="stretch")

table1 = read_table1()
if table1:
    st.subheader("Table 1, reproduced")
    st.caption("LeNet' per regularizer: test accuracy and mean ||J||_F (mean ± standard deviation over "
               "seeds where there are several) beside the paper's numbers (Hoffman, Roberts & Yaida 2019, "
               "Table 1: full MNIST), from `reproduction/table1.csv` (`python -m jacreg reproduce`).")
    st.dataframe(table1_display(table1), hide_index=True, width="stretch")

report = common.ROOT / "REPRODUCTION.md"
if report.is_file():
    st.subheader("The paper, reproduced")
    st.markdown(f"See `REPRODUCTION.md` ({report}) for the tables and figures produced by "
                "`python -m jacreg reproduce`.")
    with st.expander("Show REPRODUCTION.md"):
        st.markdown(report.read_text(encoding="utf-8"))
    figures = [(common.ROOT / "reproduction" / name, caption) for name, caption in (
        ("fig3.png", "Fig. 3: accuracy under white noise, FGSM and PGD"),
        ("fig2.png", "Fig. 2: exact regularizer vs random projections during training"),
        ("fig1_random.png", "Fig. 1 / S1: decision cells on a random plane"),
        ("fig_s2_adversarial.png", "Fig. S2: decision cells on an adversarial plane"))]
    for path, caption in figures:
        if path.is_file():
            st.image(str(path), caption=caption)
