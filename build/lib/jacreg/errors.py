"""Errors a user can cause. The CLI prints them and exits 2; the app shows them with st.error."""

from __future__ import annotations


class JacregError(Exception):
    """Base class of every error caused by user input (bad file, bad value, no data offline)."""


class ConfigError(JacregError, ValueError):
    """An option or argument is out of range or inconsistent."""


class DatasetUnavailable(JacregError):
    """A dataset cannot be found locally and cannot be downloaded."""


class CheckpointError(JacregError):
    """A checkpoint file is unreadable, unsafe, or does not match its architecture."""


class ShapeError(JacregError, ValueError):
    """Inputs or models have incompatible shapes."""


class OutputError(JacregError):
    """A file the user asked for cannot be written (unwritable folder, a folder in the way, a disk
    full); the message names the path."""
