"""Writing and reading an ONNX graph whose weights may live in one external-data file beside it.

Protobuf cannot serialise a message over 2 GB: MiMo-Embodied's FP32 vision tower is 2.7 GB. Above
EXTERNAL_DATA_BYTES of weights a graph is written as `<name>` (the graph) plus exactly one `<name>.data` (every
initializer, `all_tensors_to_one_file`), never the hundreds of loose files torch's exporter spills; below it, one
file. Both are written into a private temporary folder next to the output and renamed into place, data first, so a
reader sees a whole old pair or a whole new one. A graph's external references are checked when it is read: every
initializer must point into `<name>.data`, inside its length (a graph cannot make a runtime read another file).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgekit.atomic import plain_mode, write_error
from edgekit.errors import EdgekitError

EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to one external-data file (protobuf's hard limit is 2 GB)


def data_file_name(graph: str | Path) -> str:
    return Path(graph).name + ".data"


def initializer_bytes(model) -> int:
    """Bytes of the weights a loaded model holds (raw and typed fields)."""
    total = 0
    for t in model.graph.initializer:
        total += (
            len(t.raw_data) + 4 * (len(t.float_data) + len(t.int32_data)) + 8 * (len(t.int64_data) + len(t.double_data))
        )
    return total


def save_graph(model, out: str | Path, *, threshold: int | None = None) -> list[Path]:
    """Write `model` (an onnx.ModelProto with its weights loaded) as `out`, plus `out.data` when its weights exceed
    the threshold; returns the files written. A stale `out.data` of an earlier, larger graph is removed."""
    import onnx

    out = Path(out)
    limit = EXTERNAL_DATA_BYTES if threshold is None else threshold
    external = initializer_bytes(model) > limit
    data = out.with_name(data_file_name(out))
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
            staged = Path(tmp) / out.name
            if external:
                onnx.save_model(
                    model,
                    str(staged),
                    save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location=data.name,
                    size_threshold=0,
                )
                plain_mode(Path(tmp) / data.name)
                os.replace(Path(tmp) / data.name, data)
            else:
                onnx.save_model(model, str(staged))
            plain_mode(staged)
            os.replace(staged, out)
    except OSError as e:
        raise write_error(out, e) from None
    if not external:
        data.unlink(missing_ok=True)
        return [out]
    return [out, data]


def external_locations(model) -> set[str]:
    """The files a graph's initializers reference (empty: every weight is inside the graph)."""
    from onnx import TensorProto

    out = set()
    for t in model.graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            out.add(next((e.value for e in t.external_data if e.key == "location"), ""))
    return out


def check_external_refs(model, graph_name: str, data_size: int | None) -> None:
    """Every external reference of the graph points into `<graph_name>.data`, inside its `data_size` bytes, and
    holds exactly its tensor's bytes."""
    import math

    from onnx import TensorProto, helper

    want = data_file_name(graph_name)
    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        refs = {e.key: e.value for e in t.external_data}
        if refs.get("location") != want:
            raise EdgekitError(f"{graph_name}: initializer '{t.name}' refers to {refs.get('location')!r}, not {want}")
        offset, length = int(refs.get("offset", 0)), int(refs.get("length", -1))
        if data_size is None or offset < 0 or length < 0 or offset + length > data_size:
            raise EdgekitError(f"{graph_name}: initializer '{t.name}' lies outside {want} ({offset}+{length} bytes)")
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        if length != math.prod(t.dims) * itemsize:
            raise EdgekitError(
                f"{graph_name}: initializer '{t.name}' has {length} bytes in {want}, its shape "
                f"{list(t.dims)} needs {math.prod(t.dims) * itemsize}"
            )


def _weights_as_inputs(model, name: str):
    """A copy of the graph whose external initializers are typed graph inputs instead (for the checker)."""
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [t for t in out.graph.initializer if t.data_location != TensorProto.EXTERNAL]
    moved = [t for t in out.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    have = {i.name for i in out.graph.input}
    out.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved if t.name not in have
    )
    return out


def check_graph_bytes(graph: bytes, name: str, data_size: int | None = None) -> int:
    """onnx.checker (full) on a graph held in memory; returns the number of nodes. With external data (`data_size`
    bytes, already hashed), every reference is checked to lie inside that file and to hold exactly its tensor's bytes,
    and the checker runs on the graph with those weights declared as typed inputs (it reads external data only by a
    path, and refuses a link to the verified descriptor)."""
    import onnx

    model = onnx.load_model_from_string(graph)
    refs = external_locations(model)
    if refs and data_size is None:
        raise EdgekitError(f"{name}: the graph keeps its weights in {sorted(refs)} but the bundle lists no such file")
    if refs:
        check_external_refs(model, name, data_size)
        model = _weights_as_inputs(model, name)
    onnx.checker.check_model(model, full_check=True)
    bad = sorted({n.op_type for n in model.graph.node if n.op_type in ("Loop", "If", "Scan")})
    if bad:
        raise EdgekitError(f"{name}: graph has control-flow nodes {bad}")
    return len(model.graph.node)
