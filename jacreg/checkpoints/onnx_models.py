"""ONNX models of any architecture: converted to a differentiable torch module, safely.

An ONNX file is a protobuf of operators and tensors, not code. It is parsed from the bytes already
read with the loader's size cap; a model that refers to external data files (paths on this machine) is
refused; every value and node is renamed before conversion (no name from the file reaches the code
torch.fx generates); the graph is checked with ``onnx.checker``; and it is converted with onnx2torch
(maintained, on PyPI), plus converters for operators it lacks at torch's default export opset
(``Gelu``, opset 20). The result takes images in [0, 1] as every jacreg model does (any normalisation
is part of the exported graph) and is wrapped in :class:`jacreg.architectures.Normalized` with the
identity normalisation, so ``||J||_F`` is taken with respect to those images.

Facts the loader needs come from the graph: the input shape (C, H, W) from the graph's input, the
number of classes from its output; the dataset from the caller, else the registered dataset with
that input shape and those classes (offline data first), and a model card stored as the model's
``jacreg`` metadata property (JSON) takes precedence where it names them. A graph exported with a
fixed batch size (``torch.onnx.export`` at its defaults) has that batch size in its reshapes: such a
model is made batch-agnostic when a rewrite of those reshapes gives the same outputs as the original,
checked on inputs here, and is otherwise run in chunks of its batch size.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .. import architectures
from .. import data as datasets
from ..errors import CheckpointError
from .card import MAX_CLASSES, MAX_INPUT_VALUES, validate_card
from .reading import CARD_KEY, DEFAULT_MAX_BYTES, read_blob

if TYPE_CHECKING:
    import onnx

__all__ = ["load_onnx"]


_CONVERTER: Callable[[Any], nn.Module] | None = None
_CONVERTER_LOCK = threading.Lock()


def _converter() -> Callable[[Any], nn.Module]:
    """onnx2torch's ``convert``, with the converters it lacks registered once. Imported on first use:
    onnx2torch takes seconds to import and only ONNX files need it."""
    global _CONVERTER
    with _CONVERTER_LOCK:
        if _CONVERTER is None:
            from onnx2torch import convert
            from onnx2torch.node_converters.registry import add_converter
            from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

            @add_converter(operation_type="Gelu", version=20)
            def _gelu(node: Any, graph: Any) -> Any:
                """ONNX Gelu (opset 20, torch.onnx's export of nn.GELU): erf form or tanh approximation."""
                approximate = node.attributes.get("approximate", "none")
                if isinstance(approximate, bytes):
                    approximate = approximate.decode()
                if approximate not in ("none", "tanh"):
                    raise NotImplementedError(f"Gelu with approximate={approximate!r}")
                return OperationConverterResult(torch_module=nn.GELU(approximate=approximate),
                                                onnx_mapping=onnx_mapping_from_node(node=node))

            _alias_type_only_versions()
            _CONVERTER = convert
        return _CONVERTER


#: Operators whose newer versions (at torch's default export opset, 20, and at 21) only admit more
#: tensor types: onnx2torch's converter of the last version it knows converts them unchanged.
_TYPE_ONLY_VERSIONS: dict[str, tuple[int, ...]] = {
    "Reshape": (19, 21), "Identity": (19, 21), "Cast": (19, 21), "Shape": (19, 21), "Constant": (19, 21),
    "ConstantOfShape": (20, 21), "Flatten": (21,), "Transpose": (21,), "Unsqueeze": (21,),
}


def _alias_type_only_versions() -> None:
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    known: dict[str, list[Any]] = {}
    for description in _CONVERTER_REGISTRY:
        if description.domain == "":
            known.setdefault(description.operation_type, []).append(description)
    for op, versions in _TYPE_ONLY_VERSIONS.items():
        if op not in known:
            continue
        last = max(known[op], key=lambda d: d.version)
        for version in versions:
            description = OperationDescription(domain="", operation_type=op, version=version)
            _CONVERTER_REGISTRY.setdefault(description, _CONVERTER_REGISTRY[last])


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def _rename(model: onnx.ModelProto) -> None:
    """Every value and node gets a plain generated name (consistently), before conversion."""
    g = model.graph
    names: dict[str, str] = {"": ""}
    for value in [*g.input, *g.output, *g.value_info, *g.initializer]:
        names.setdefault(value.name, f"v{len(names)}")
    for node in g.node:
        for name in [*node.input, *node.output]:
            names.setdefault(name, f"v{len(names)}")
    for value in [*g.input, *g.output, *g.value_info, *g.initializer]:
        value.name = names[value.name]
    for i, node in enumerate(g.node):
        node.name = f"node{i}"
        node.input[:] = [names[n] for n in node.input]
        node.output[:] = [names[n] for n in node.output]


def _inline(tensors: list[Any], folder: Path, where: str, max_bytes: int) -> None:
    """Read the weights an exported model keeps beside it (``m.onnx.data``) into the model: only a
    plain file name in the model's own folder, a regular file, within its size, within the size cap."""
    files: dict[str, bytes] = {}
    total = 0
    for t in tensors:
        info = {e.key: e.value for e in t.external_data}
        location = info.get("location", "")
        if not location or location != Path(location).name or location in (".", ".."):
            raise CheckpointError(f"{where}: external weights must be a file beside the model, not "
                                  f"{location[:80]!r}")
        if location not in files:
            files[location] = read_blob(folder / location, max_bytes).data
        blob = files[location]
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", len(blob)))
        except ValueError:
            raise CheckpointError(f"{where}: corrupt external data entry for a weight") from None
        if offset < 0 or length < 0 or offset + length > len(blob):
            raise CheckpointError(f"{where}: external data out of the bounds of {location}")
        total += length
        if total > max_bytes:
            raise CheckpointError(f"{where}: external weights over the size limit")
        t.raw_data = blob[offset:offset + length]
        del t.external_data[:]
        t.data_location = 0  # DEFAULT


def _parse(data: bytes, where: str, folder: Path | None, max_bytes: int) -> onnx.ModelProto:
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - DecodeError and friends: a corrupt file
        raise CheckpointError(f"{where} is not a valid ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise CheckpointError(f"{where} is not an ONNX model with a graph")
    if model.functions or any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
        raise CheckpointError(f"{where} uses custom operators or functions, which are not supported")
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        if folder is None:
            raise CheckpointError(f"{where} keeps its weights in a separate file, which an upload does not "
                                  "carry: export it as one file "
                                  "(torch.onnx.export(..., external_data=False))")
        _inline(external, folder, where, max_bytes)
    weights = {t.name for t in model.graph.initializer}
    if not [v for v in model.graph.input if v.name not in weights]:
        raise CheckpointError(f"{where} has no input")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{where} is not a valid ONNX model: {reason}") from None
    return model


def _drop_harmless_allowzero(model: onnx.ModelProto) -> None:
    """torch.onnx marks its reshapes ``allowzero=1``, which onnx2torch does not convert; it only
    changes the meaning of a 0 in the target shape, so it is dropped where the (constant) target
    has none."""
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if (constants[node.input[1]] != 0).all():
            kept = [a for a in node.attribute if a.name != "allowzero"]
            del node.attribute[:]
            node.attribute.extend(kept)


def _io(model: onnx.ModelProto, where: str) -> tuple[list[int | None], list[int | None]]:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise CheckpointError(f"{where} must have one image input and one logits output, has "
                              f"{len(inputs)} inputs and {len(model.graph.output)} outputs")
    shape_in, shape_out = _dims(inputs[0]), _dims(model.graph.output[0])
    if len(shape_in) != 4 or len(shape_out) != 2:
        raise CheckpointError(f"{where}: expected an (N, C, H, W) input and (N, classes) logits, got "
                              f"{shape_in} and {shape_out}")
    return shape_in, shape_out


def _card(model: onnx.ModelProto, where: str) -> dict[str, Any]:
    for prop in model.metadata_props:
        if prop.key == CARD_KEY:
            try:
                card = json.loads(prop.value)
            except (ValueError, RecursionError):
                raise CheckpointError(f"{where}: its {CARD_KEY} metadata is not valid JSON") from None
            if not isinstance(card, dict):
                raise CheckpointError(f"{where}: its {CARD_KEY} metadata is not a JSON object")
            return card
    return {}


class _Chunked(nn.Module):
    """Runs a network converted with a fixed batch size on any batch: in chunks of that size, the last
    one padded with copies of its first sample (padding dropped from the output)."""

    def __init__(self, net: nn.Module, batch: int) -> None:
        super().__init__()
        self.net, self.batch = net, batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chunk in x.split(self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[:1].expand(self.batch - n, *chunk.shape[1:])])
            outs.append(self.net(chunk)[:n])
        return torch.cat(outs)


def _free_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy whose input and output batch dimension is symbolic and whose constant reshape targets
    that start with the exported batch size start with -1 instead (torch.onnx's static export)."""
    import onnx
    from onnx import numpy_helper

    free = onnx.ModelProto()
    free.CopyFrom(model)
    g = free.graph
    for value in [*g.input, *g.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
    shapes = {n.input[1] for n in g.node if n.op_type == "Reshape" and len(n.input) > 1}
    for t in g.initializer:
        if t.name in shapes:
            a = numpy_helper.to_array(t).copy()
            if a.ndim == 1 and a.size and int(a[0]) == batch:
                a[0] = -1
                t.CopyFrom(numpy_helper.from_array(a, t.name))
    del g.value_info[:]
    return free


def _convert(model: onnx.ModelProto, where: str) -> nn.Module:
    try:
        return _converter()(model)
    except NotImplementedError as exc:
        raise CheckpointError(f"{where} uses an operator that cannot be converted: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the converter is a model we cannot load
        raise CheckpointError(f"{where} cannot be converted to torch ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None


def _network(model: onnx.ModelProto, shape: tuple[int, int, int], batch: int | None,
             where: str) -> nn.Module:
    """The converted network, taking any batch size."""
    net = _convert(model, where)
    if batch is None:
        return net
    chunked = _Chunked(net, batch)
    try:
        free = _convert(_free_batch(model, batch), where)
        probe = torch.rand(batch + 1, *shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if torch.allclose(free(probe), chunked(probe), rtol=1e-4, atol=1e-5):
                return free
    except (CheckpointError, RuntimeError):
        pass
    return chunked


def _dataset_for(shape: tuple[int, int, int], classes: int) -> str | None:
    specs = [datasets.DATASETS[n] for n in datasets.names()]
    fits = sorted((s for s in specs if s.input_shape == shape and s.num_classes == classes),
                  key=lambda s: not s.offline)
    return fits[0].name if fits else None


def load_onnx(data: bytes, where: str, dataset: str | None, *, folder: Path | None = None,
              max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[nn.Module, dict[str, Any]]:
    """An ONNX model as a torch module taking [0, 1] images, and its card (see the module docstring).

    Args:
        folder: the model file's folder, where weights exported beside it are read (None for uploads).

    Raises:
        CheckpointError: not a valid ONNX model, external data, custom operators, an operator that
            cannot be converted, or an input and output that are not images and logits.
        ConfigError: an unknown dataset was chosen.
    """
    model = _parse(data, where, folder, max_bytes)
    card = validate_card({k: v for k, v in _card(model, where).items() if k != "arch"}, where)
    _rename(model)
    _drop_harmless_allowzero(model)
    shape_in, shape_out = _io(model, where)
    if dataset is not None:
        spec = datasets.dataset_spec(dataset)
        chosen: tuple[int, ...] = spec.input_shape
    else:
        chosen = tuple(card.get("input_shape") or ())
    c, h, w = (v or (chosen[i] if len(chosen) == 3 else None) for i, v in enumerate(shape_in[1:]))
    if None in (c, h, w):
        raise CheckpointError(f"{where}: the graph does not fix its input size ({shape_in}); choose the "
                              "dataset (--dataset / dataset=)")
    shape = (int(c), int(h), int(w))  # type: ignore[arg-type]
    if math.prod(shape) > MAX_INPUT_VALUES:
        raise CheckpointError(f"{where}: input {shape} is too large (at most {MAX_INPUT_VALUES:,} values)")
    classes = shape_out[1] or card.get("num_classes")
    if not isinstance(classes, int) or not 2 <= classes <= MAX_CLASSES:
        raise CheckpointError(f"{where}: cannot tell the number of classes from the graph ({shape_out})")
    name = dataset or card.get("dataset") or _dataset_for(shape, classes)
    if name is not None and datasets.dataset_spec(str(name)).input_shape != shape:
        raise CheckpointError(f"{where} takes {shape} inputs but {name} has "
                              f"{datasets.dataset_spec(str(name)).input_shape}")
    net = _network(model, shape, shape_in[0], where)
    wrapped = architectures.Normalized(net, [0.0] * shape[0], [1.0] * shape[0]).eval()
    meta = {**card, "arch": "onnx", "dataset": name, "num_classes": classes, "input_shape": list(shape),
            "mean": [0.0] * shape[0], "std": [1.0] * shape[0], "dropout": 0.0, "format": "onnx",
            "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                         default=None),
            "fixed_batch": shape_in[0]}
    return wrapped, meta

