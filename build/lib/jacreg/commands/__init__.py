"""The command line's commands, one module each: argparse, tqdm and printing live only here.

Every module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; the library
functions they call are the same the app calls.
"""

from __future__ import annotations

from types import ModuleType

from . import cells, evaluate, reproduce, robustness, train

#: In the order ``--help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (train, evaluate, cells, robustness, reproduce)

__all__ = ["COMMANDS"]
