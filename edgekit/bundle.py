"""The bundle manifest (`edgekit.json`): schema, hashing, and `verify`.

A bundle is a directory of artifacts plus `edgekit.json`, written last. The manifest lists every
other file with its sha256 and size, so `verify` detects a changed byte, a missing file or a
stray one, and a build killed before the manifest was written never verifies. Manifests hold no
timestamps or absolute paths: two builds from the same inputs are byte-identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError

MANIFEST = "edgekit.json"
SCHEMA = "edgekit.bundle/1"


def sha256_file(path: Path) -> str:
    from edgekit.model.checkpoint import sha256_file as _sha

    return _sha(path)


def list_artifacts(bundle: Path) -> list[Path]:
    """Every file in the bundle except the manifest, sorted, relative."""
    return sorted(p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file() and p.name != MANIFEST)


def artifact_table(bundle: Path) -> dict[str, dict]:
    return {str(rel): {"sha256": sha256_file(bundle / rel), "size": (bundle / rel).stat().st_size}
            for rel in list_artifacts(bundle)}


def tool_versions() -> dict[str, str]:
    """Versions of the libraries that shape the artifacts' bytes."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("edgekit", "torch", "transformers", "onnx", "onnxruntime", "gguf", "llama_cpp_python", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class VerifyReport:
    bundle: Path
    checked: list[str] = field(default_factory=list)  # one line per check that passed
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def read_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise EdgekitError(f"{bundle}: bundle directory not found")
    if not path.is_file():
        raise EdgekitError(f"{path}: missing; this is not a complete bundle (a build that was interrupted never writes it)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{path}: corrupt manifest ({e})") from None
    if manifest.get("schema") != SCHEMA:
        raise EdgekitError(f"{path}: unknown schema {manifest.get('schema')!r}; this edgekit reads {SCHEMA}")
    for key in ("artifacts", "parts", "model", "target"):
        if key not in manifest:
            raise EdgekitError(f"{path}: manifest has no '{key}'")
    return manifest


def verify_bundle(bundle: str | Path, *, deep: bool = True) -> VerifyReport:
    """Check schema, every artifact's hash and size, and (deep) that each artifact loads in its runtime."""
    bundle = Path(bundle)
    report = VerifyReport(bundle)
    manifest = read_manifest(bundle)
    listed = manifest["artifacts"]
    present = {str(p) for p in list_artifacts(bundle)}
    for rel in sorted(set(listed) - present):
        report.errors.append(f"{rel}: listed in the manifest but missing")
    for rel in sorted(present - set(listed)):
        report.errors.append(f"{rel}: not listed in the manifest (stray or tampered file)")
    for rel in sorted(set(listed) & present):
        entry, path = listed[rel], bundle / rel
        if path.stat().st_size != entry["size"]:
            report.errors.append(f"{rel}: size {path.stat().st_size} != manifest {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            report.errors.append(f"{rel}: sha256 differs from the manifest (modified or corrupt)")
        else:
            report.checked.append(f"{rel}: sha256 ok")
    if report.errors or not deep:
        return report
    for name, part in sorted(manifest["parts"].items()):
        try:
            report.checked.append(f"{name}: {_check_part(bundle, part)}")
        except EdgekitError as e:
            report.errors.append(f"{name}: {e.message}")
        except Exception as e:  # a loader's own exception: report it against the artifact
            report.errors.append(f"{name}: {part.get('path')}: failed to load ({e.__class__.__name__}: {e})")
    return report


def _check_part(bundle: Path, part: dict) -> str:
    """Load one artifact in the runtime its users will use; return what was checked."""
    fmt, path = part["format"], bundle / part["path"]
    if fmt == "onnx":
        import onnx

        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        bad = sorted({n.op_type for n in model.graph.node if n.op_type in ("Loop", "If", "Scan")})
        if bad:
            raise EdgekitError(f"{part['path']}: graph has control-flow nodes {bad}")
        return f"{part['path']}: onnx.checker (full) ok, {len(model.graph.node)} nodes, no Loop/If"
    if fmt in ("gguf", "mmproj-gguf"):
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        arch = reader.fields.get("general.architecture")
        if arch is None or not reader.tensors:
            raise EdgekitError(f"{part['path']}: GGUF without architecture or tensors")
        return f"{part['path']}: GGUF ok, {len(reader.tensors)} tensors"
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
        from edgekit.edgellm import check_int4_export, check_int8_export
        from edgekit.export.modelopt_reader import open_unified

        if open_unified(unified).algo == "W4A16_AWQ":
            r = check_int4_export(onnx_path, unified)
            return f"{part['path']}: {r['int4_plugin_nodes']} Int4GroupwiseGemmPluginV2 nodes, scales equal edgekit's"
        r = check_int8_export(onnx_path, unified)
        return (f"{part['path']}: {r['int8_weight_dq']} INT8 weight DequantizeLinear (codes and scales equal edgekit's), "
                f"{r['activation_q']} activation QuantizeLinear with edgekit's scales")
    model = onnx.load(str(onnx_path), load_external_data=False)
    return f"{part['path']}: onnx loads, {len(model.graph.node)} nodes"

