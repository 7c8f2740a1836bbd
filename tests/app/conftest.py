"""Fixtures for the page tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    """The app caches the model list for a few seconds; each test has its own folders."""
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
