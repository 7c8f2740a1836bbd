"""Devices: ``pick("auto")`` -> cuda, then mps, then cpu; where a model lives; eval copies.

A model handed to an analysis (cross sections, attacks) is never changed: :func:`eval_copy` gives
the analysis a model in eval mode on the device it asked for, copying only when it must.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from .errors import ConfigError


def pick(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve a device name.

    Args:
        device: ``"auto"`` (or None) for the best available accelerator, else any torch device
            string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.

    Raises:
        ConfigError: the device string is malformed or names an accelerator that is absent.
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"device {device!r} requested but MPS is not available here; use --device cpu")
    return dev


def available() -> list[str]:
    """Device names a user can pick on this machine (for the app's device picker)."""
    names = ["auto", "cpu"]
    names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def describe(device: torch.device) -> str:
    """A short human description, e.g. 'cuda:0 (NVIDIA H100)' or 'cpu (2 threads)'."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); cpu for a model without tensors."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def same_device(a: torch.device, b: torch.device) -> bool:
    """True when two devices are the same (``cuda`` and ``cuda:<current>`` count as one)."""
    if a.type != b.type:
        return False
    if a.type == "cuda":
        ia = a.index if a.index is not None else torch.cuda.current_device()
        ib = b.index if b.index is not None else torch.cuda.current_device()
        return ia == ib
    return True


def eval_copy(model: nn.Module, device: str | torch.device | None = None, *,
              frozen: bool = False) -> tuple[nn.Module, torch.device]:
    """The model in eval mode on ``device`` (default: its own), without changing the caller's model.

    A model already in eval mode on that device is returned as it is, unless ``frozen``: then the
    result is always a private copy whose parameters do not require gradients, so that gradients
    taken through it (attacks) compute the input gradient only and never touch the caller's
    ``.grad``. Models from caches are shared between pages and threads and must not be mutated.

    Returns:
        ``(model, device)``.
    """
    current = model_device(model)
    dev = current if device is None else pick(device)
    if frozen or model.training or not same_device(current, dev):
        with torch.inference_mode(False):  # a copy made under inference mode could not be differentiated
            model = copy.deepcopy(model).to(dev).eval()
            if frozen:
                model.requires_grad_(False)
    return model, dev


def thread_budget(kind: str = "job", cores: int | None = None) -> int:
    """CPU threads for a background job or for the page's computations, so that the two do not
    oversubscribe the cores: torch's default (all cores in every process) makes two busy processes on
    two cores 10-100x slower on small batches. A job gets half of the cores (at least one), the page
    the other half; ``JACREG_THREADS`` overrides both.

    Args:
        kind: ``"job"`` or ``"page"``.
        cores: the number of logical CPUs (default: this machine's).
    """
    override = os.environ.get("JACREG_THREADS", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    n = cores if cores is not None else (os.cpu_count() or 1)
    half = max(1, n // 2)
    return half if kind == "job" else max(1, n - half)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA's free memory, the host's available memory
    for the CPU (``MemAvailable``), None where it cannot be told."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def bytes_per_sample(model: nn.Module, sample: torch.Tensor) -> int:
    """Memory one input costs in a forward pass with gradients (an attack's step): the bytes of
    every module's output for one sample, times three (saved for backward, their gradients, and
    temporaries), plus the input's own. Measured with forward hooks on one sample, without a graph.
    """
    total = [0]

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        outs = output if isinstance(output, (tuple, list)) else (output,)
        for t in outs:
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    leaves = [m for m in model.modules() if not any(True for _ in m.children())] or [model]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
    return 3 * total[0] + 4 * sample[:1].numel() * sample.element_size()


def memory_batch(model: nn.Module, sample: torch.Tensor, requested: int, device: torch.device, *,
                 fraction: float = 0.25) -> int:
    """The largest batch, at most ``requested``, whose attack fits in ``fraction`` of the free
    memory of ``device`` (at least 1). ``sample`` is one input on ``device``."""
    free = free_memory(device)
    if free is None:
        return requested
    per = max(1, bytes_per_sample(model, sample))
    return max(1, min(requested, int(free * fraction) // per))
