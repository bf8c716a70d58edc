"""`verify --deep`: each part of a verified bundle loaded in the runtime its users will use (ONNX's checker, the
GGUF reader, the unified checkpoint's reader, Edge-LLM's graph against edgekit's scales), single files through the
descriptor their hash was computed from."""

from __future__ import annotations

import os
from pathlib import Path

from edgekit.errors import EdgekitError


def check_part(opened, part: dict) -> str:
    """Load one artifact in the runtime its users will use (through the descriptor that was hashed); return what was
    checked."""
    fmt, rel = part["format"], part["path"]
    bundle, path = opened.root, opened.root / part["path"]
    if fmt == "onnx":
        from edgekit.export.onnx_files import check_graph_bytes

        data = part.get("external_data")
        nodes = check_graph_bytes(
            opened.read(rel, max_bytes=2 << 30), Path(rel).name, os.fstat(opened.fd(data)).st_size if data else None
        )
        return f"{rel}: onnx.checker (full) ok, {nodes} nodes, no Loop/If" + (f", weights in {data}" if data else "")
    if fmt in ("gguf", "mmproj-gguf"):
        from gguf import GGUFReader

        reader = GGUFReader(opened.path(rel))
        arch = reader.fields.get("general.architecture")
        if arch is None or not reader.tensors:
            raise EdgekitError(f"{rel}: GGUF without architecture or tensors")
        return f"{rel}: GGUF ok, {len(reader.tensors)} tensors"
    if fmt == "modelopt-unified":
        from edgekit.export.modelopt_reader import verify_unified_checkpoint

        result = verify_unified_checkpoint(path, None)
        return f"{part['path']}: unified checkpoint ok ({result})"
    if fmt == "hf-checkpoint":
        from edgekit.model.checkpoint import open_checkpoint

        ck = open_checkpoint(path)
        return f"{part['path']}: checkpoint ok, {len(ck.tensors)} tensors"
    if fmt == "edgellm-onnx-dir":
        return _check_edgellm_onnx(bundle, part)
    if fmt == "files":
        return f"{part['path']}: hashes ok"
    raise EdgekitError(f"{part['path']}: unknown artifact format '{fmt}'")


def _check_edgellm_onnx(bundle: Path, part: dict) -> str:
    """Edge-LLM's decoder ONNX: loads, and (INT4) runs every quantized linear in its plugin with edgekit's scales."""
    import onnx

    onnx_path = bundle / part["path"] / "llm" / "model.onnx"
    if not onnx_path.is_file():
        raise EdgekitError(f"{part['path']}: no llm/model.onnx")
    unified = bundle / "decoder" / "unified"
    if (unified / "hf_quant_config.json").is_file():
        from edgekit.bundle.edgellm import check_export

        return f"{part['path']}: {check_export(onnx_path, unified)}"
    model = onnx.load(str(onnx_path), load_external_data=False)
    return f"{part['path']}: onnx loads, {len(model.graph.node)} nodes"
