"""Figures for every page and export: plotly for the app, PNG through matplotlib for files.

One style (:mod:`~jacreg.figures.style`: class and model colours, labels, the one PNG path) and one
module per subject: :mod:`~jacreg.figures.cells`, :mod:`~jacreg.figures.robustness`,
:mod:`~jacreg.figures.training`, :mod:`~jacreg.figures.jacobian`, :mod:`~jacreg.figures.reproduce`.
PNGs are drawn with matplotlib's object API, never ``pyplot``, so pages may draw from threads.
"""
