"""The bundle manifest (`edgekit.json`): schema, hashing, the seal, and `verify`.

A bundle is a directory of artifacts plus `edgekit.json`, written last. The manifest lists every
other file with its sha256 and size, so `verify` detects a changed byte, a missing file or a
stray one, and a build killed before the manifest was written never verifies. Manifests hold no
timestamps or absolute paths: two builds from the same inputs are byte-identical.

A bundle is sealed:
- every path in the manifest (artifacts, parts, tokenizer_dir) is relative, normalised and inside the
  bundle, and every part's path is among the hashed artifacts; no symbolic links or special files;
- the manifest's own fields are covered by `seal`: a sha256 of each field's canonical JSON (to depth 2,
  so a changed field is named) and one over them all. The seal catches an edit or a corruption; it is
  no defence against someone who rewrites it too. For that, `signature` is a slot (excluded from the
  seal) for a detached signature over `seal.sha256` by a user who signs releases.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgekit.errors import EdgekitError

MANIFEST = "edgekit.json"
SCHEMA = "edgekit.bundle/2"
OLDER_SCHEMAS = ("edgekit.bundle/1",)
UNSEALED_KEYS = ("seal", "signature")
DIRECTORY_FORMATS = ("modelopt-unified", "hf-checkpoint", "edgellm-onnx-dir", "files")


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha(obj) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def field_digests(manifest: dict) -> dict[str, str]:
    """sha256 of every field to depth 2 ("context", "parts.decoder", "artifacts.vision/vision.onnx", ...)."""
    out = {}
    for key, value in manifest.items():
        if key in UNSEALED_KEYS:
            continue
        if isinstance(value, dict) and value:
            for sub, inner in value.items():
                out[f"{key}.{sub}"] = _sha(inner)
        else:
            out[key] = _sha(value)
    return out


def seal_manifest(manifest: dict) -> dict:
    """The manifest with its seal (and an empty signature slot) added."""
    body = {k: v for k, v in manifest.items() if k not in UNSEALED_KEYS}
    fields = field_digests(body)
    return {**body, "seal": {"algorithm": "sha256", "fields": fields, "sha256": _sha(fields)},
            "signature": manifest.get("signature")}


def check_seal(manifest: dict) -> list[str]:
    """Errors naming every manifest field that differs from what was sealed (empty when intact)."""
    seal = manifest.get("seal")
    if not isinstance(seal, dict) or not isinstance(seal.get("fields"), dict):
        return ["manifest has no seal: it was edited, or written by an older edgekit; rebuild the bundle"]
    sealed, now = seal["fields"], field_digests(manifest)
    errors = [f"manifest field '{k}' was edited after the build (it differs from the seal)"
              for k in sorted(set(sealed) & set(now)) if sealed[k] != now[k]]
    errors += [f"manifest field '{k}' was added after the build" for k in sorted(set(now) - set(sealed))]
    errors += [f"manifest field '{k}' was removed after the build" for k in sorted(set(sealed) - set(now))]
    if not errors and seal.get("sha256") != _sha(sealed):
        errors.append("manifest seal: its sha256 does not match its field digests (the seal itself was edited)")
    return errors


def relpath_error(rel, what: str) -> str | None:
    """Why `rel` is not a safe bundle path (relative, normalised, inside the bundle), or None."""
    if not isinstance(rel, str) or not rel:
        return f"{what}: path {rel!r} is not a non-empty string"
    if "\\" in rel or "\0" in rel or rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return f"{what}: path {rel!r} must be relative to the bundle (no absolute paths, no backslashes)"
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".") for p in rel.split("/")) or str(PurePosixPath(*parts)) != rel:
        return f"{what}: path {rel!r} must be normalised and stay inside the bundle (no '..', '.', '//')"
    return None


def walk_bundle(bundle: Path) -> tuple[list[str], list[str]]:
    """(regular files relative to the bundle except the manifest, problems): links and special files are problems,
    and the walk never follows a link."""
    files, problems = [], []
    for root, dirs, names in os.walk(bundle, followlinks=False):
        for name in sorted(dirs + names):
            path = Path(root) / name
            rel = path.relative_to(bundle).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{rel}: is a symbolic link (to {os.readlink(path)}); a sealed bundle holds no links")
            elif stat.S_ISREG(mode):
                if rel != MANIFEST:
                    files.append(rel)
            elif not stat.S_ISDIR(mode):
                problems.append(f"{rel}: is not a regular file")
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
    return sorted(files), problems


def sha256_file(path: Path) -> str:
    from edgekit.model.checkpoint import sha256_file as _sha

    return _sha(path)


def artifact_table(bundle: Path) -> dict[str, dict]:
    files, problems = walk_bundle(bundle)
    if problems:
        raise EdgekitError(f"{bundle}: {problems[0]}")
    return {rel: {"sha256": sha256_file(bundle / rel), "size": (bundle / rel).stat().st_size} for rel in files}


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
    manifest: dict | None = None  # what was verified: load from this, never re-read the file

    @property
    def ok(self) -> bool:
        return not self.errors


def read_manifest(bundle: Path) -> dict:
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise EdgekitError(f"{bundle}: bundle directory not found")
    if not path.is_file():
        raise EdgekitError(f"{path}: missing; this is not a complete bundle (a build that was interrupted never writes it)")
    if path.is_symlink() or not stat.S_ISREG(os.lstat(path).st_mode):
        raise EdgekitError(f"{path}: is not a regular file; a sealed bundle holds no links")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{path}: corrupt manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise EdgekitError(f"{path}: corrupt manifest (not a JSON object)")
    if manifest.get("schema") in OLDER_SCHEMAS:
        raise EdgekitError(f"{path}: schema {manifest['schema']} (unsealed) was written by an older edgekit; "
                           "rebuild the bundle")
    if manifest.get("schema") != SCHEMA:
        raise EdgekitError(f"{path}: unknown schema {manifest.get('schema')!r}; this edgekit reads {SCHEMA}")
    for key in ("artifacts", "parts", "model", "target"):
        if not isinstance(manifest.get(key), dict):
            raise EdgekitError(f"{path}: manifest has no '{key}' object")
    return manifest


def structure_errors(manifest: dict) -> list[str]:
    """Paths and field types a runtime relies on: every path safe and hashed, every number in range."""
    errors = []
    artifacts = manifest["artifacts"]
    for rel, entry in sorted(artifacts.items()):
        err = relpath_error(rel, "artifacts")
        if err:
            errors.append(err)
        elif (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
              or not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool)):
            errors.append(f"artifacts: entry for {rel!r} needs a sha256 string and an integer size")

    def listed(rel: str, directory: bool) -> bool:
        return any(a.startswith(rel + "/") for a in artifacts) if directory else rel in artifacts

    for name, part in sorted(manifest["parts"].items()):
        if not isinstance(part, dict) or not isinstance(part.get("format"), str):
            errors.append(f"parts.{name}: needs a 'format' and a 'path'")
            continue
        rel = part.get("path")
        err = relpath_error(rel, f"parts.{name}")
        if err:
            errors.append(err)
        elif not listed(rel, part["format"] in DIRECTORY_FORMATS):
            errors.append(f"parts.{name}: path {rel!r} is not among the bundle's hashed artifacts")
    tok = manifest.get("tokenizer_dir")
    err = relpath_error(tok, "tokenizer_dir")
    errors += [err] if err else ([] if listed(tok, True) else [f"tokenizer_dir: {tok!r} holds no hashed artifact"])
    context = manifest.get("context")
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        errors.append(f"context: {context!r} must be a whole number >= 1")
    pre = manifest.get("preprocessing")
    res = pre.get("resolution") if isinstance(pre, dict) else None
    if not (isinstance(res, list) and len(res) == 2 and all(isinstance(x, int) and x > 0 for x in res)):
        errors.append(f"preprocessing.resolution: {res!r} must be [width, height] in pixels")
    return errors


def verify_bundle(bundle: str | Path, *, deep: bool = True) -> VerifyReport:
    """Check schema, every artifact's hash and size, and (deep) that each artifact loads in its runtime."""
    bundle = Path(bundle)
    report = VerifyReport(bundle)
    manifest = read_manifest(bundle)
    report.errors += check_seal(manifest) + structure_errors(manifest)
    files, problems = walk_bundle(bundle)
    report.errors += problems
    if report.errors:  # an unsafe path is never opened, not even to hash it
        return report
    report.checked.append(f"{MANIFEST}: seal ok ({len(manifest['seal']['fields'])} fields), every path inside the bundle")
    listed = manifest["artifacts"]
    present = set(files)
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
    if not report.errors:
        report.manifest = manifest
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
        from edgekit.bundle.edgellm import check_int4_export, check_int8_export
        from edgekit.export.modelopt_reader import open_unified

        if open_unified(unified).algo == "W4A16_AWQ":
            r = check_int4_export(onnx_path, unified)
            return f"{part['path']}: {r['int4_plugin_nodes']} Int4GroupwiseGemmPluginV2 nodes, scales equal edgekit's"
        r = check_int8_export(onnx_path, unified)
        return (f"{part['path']}: {r['int8_weight_dq']} INT8 weight DequantizeLinear (codes and scales equal edgekit's), "
                f"{r['activation_q']} activation QuantizeLinear with edgekit's scales")
    model = onnx.load(str(onnx_path), load_external_data=False)
    return f"{part['path']}: onnx loads, {len(model.graph.node)} nodes"

