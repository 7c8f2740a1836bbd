"""Parsing of the small text values users type (on the command line and in the app's fields).

One implementation for both front ends, so that ``--eps 0,0.1`` and the page's epsilon field, or
``--through 5,9`` and the page's "other two samples", accept the same text with the same defaults.
"""

from __future__ import annotations

from .errors import ConfigError

__all__ = ["MAX_SEED", "check_seed", "parse_floats", "parse_indices", "parse_through"]

#: Seeds are 32-bit (as numpy's): derived seeds (seed * 100003 + epoch, ...) stay in range.
MAX_SEED = 2**32 - 1


def check_seed(seed: object, what: str = "seed") -> int:
    """A random seed: an integer from 0 to :data:`MAX_SEED` (ConfigError if not)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{what} must be an integer from 0 to {MAX_SEED}, got {seed!r:.40}")
    return seed


def parse_floats(text: str, what: str = "values") -> list[float]:
    """``"0, 0.1,0.2"`` -> ``[0.0, 0.1, 0.2]``.

    Raises:
        ConfigError: a part is not a number, or there is none.
    """
    try:
        vals = [float(t) for t in str(text).split(",") if t.strip() != ""]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ConfigError(f"{what}: give at least one number")
    return vals


def parse_indices(text: str, what: str = "indices") -> list[int]:
    """``"5, 9"`` -> ``[5, 9]`` (ConfigError for anything but comma-separated integers)."""
    try:
        return [int(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers like 5,9, got {text!r}") from None


def parse_through(text: str | None, sample: int, n: int, what: str = "--through") -> tuple[int, int]:
    """The two other samples of a plane through three samples.

    Args:
        text: ``"J,K"``, or empty/None for the default: the two samples after ``sample``
            (wrapping around at the end of the test set).
        sample: the index of the plane's centre.
        n: the number of test samples (valid indices are 0..n-1).

    Raises:
        ConfigError: not two integers, or an index outside 0..n-1.
    """
    if n < 1:
        raise ConfigError("no test samples")
    if text is None or not str(text).strip():
        return (sample + 1) % n, (sample + 2) % n
    try:
        vals = parse_indices(str(text), what)
    except ConfigError:
        vals = []
    if len(vals) != 2:
        raise ConfigError(f"{what}: give two indices like 5,9 (got {text!r})")
    for v in vals:
        if not 0 <= v < n:
            raise ConfigError(f"{what}: sample {v} does not exist: indices run from 0 to {n - 1}")
    return vals[0], vals[1]
