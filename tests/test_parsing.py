"""jacreg.parsing: the text users type, read the same way by the command line and the app."""

from __future__ import annotations

import pytest

from jacreg.errors import ConfigError
from jacreg.parsing import MAX_SEED, check_seed, parse_floats, parse_indices, parse_through


def test_floats():
    assert parse_floats(" 0, 0.1,0.2 ,") == [0.0, 0.1, 0.2]
    for bad in ("", ",", "a,b", "0.1;0.2"):
        with pytest.raises(ConfigError):
            parse_floats(bad, "--eps")


def test_indices_and_through():
    assert parse_indices("5, 9") == [5, 9]
    assert parse_through("", 3, 10) == (4, 5) and parse_through(None, 9, 10) == (0, 1)  # wraps around
    assert parse_through("7,2", 0, 10) == (7, 2)
    for bad in ("1", "1,2,3", "1,x", "-1,2", "10,2"):
        with pytest.raises(ConfigError, match="two indices|does not exist"):
            parse_through(bad, 0, 10)


def test_seeds():
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED
    for bad in (-1, MAX_SEED + 1, 10**30, 1.0, True, "3", None):
        with pytest.raises(ConfigError, match="seed"):
            check_seed(bad)
