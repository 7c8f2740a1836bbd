"""jacreg: robust learning with Jacobian regularization (Hoffman, Roberts & Yaida, 2019).

Public API::

    from jacreg import JacobianReg, jacobian_norms, load_checkpoint, save_checkpoint, JacregError
"""

from __future__ import annotations

from typing import Any

from .errors import CheckpointError, ConfigError, DatasetUnavailable, JacregError, ShapeError

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DatasetUnavailable",
    "JacobianReg",
    "JacregError",
    "ShapeError",
    "__version__",
    "jacobian_norms",
    "load_checkpoint",
    "save_checkpoint",
]

_LAZY = {
    "JacobianReg": "regularizer",
    "jacobian_norms": "regularizer",
    "load_checkpoint": "checkpoints",
    "save_checkpoint": "checkpoints",
}


def __getattr__(name: str) -> Any:  # PEP 562: import torch-heavy modules on first use
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'jacreg' has no attribute {name!r}")
