"""The bundle manifest (`edgekit.json`): schema, hashing, the seal, and `verify`.

A bundle is a directory of artifacts plus `edgekit.json`, written last. The manifest lists every
other file with its sha256 and size, so `verify` detects a changed byte, a missing file or a
stray one, and a build killed before the manifest was written never verifies. Manifests hold no
timestamps or absolute paths: two builds from the same inputs are byte-identical.

A bundle is sealed (edgekit/bundle/seal.py: one sha256 over the RFC 8785 canonical form of the manifest), and:
- every path in the manifest (artifacts, parts, tokenizer_dir) is relative, normalised and inside the
  bundle, and every part's path is among the hashed artifacts; no symbolic links or special files;
- every number a runtime uses is in range before anything loads (context within the model's positions, ...);
- the artifacts are opened once, below the bundle's directory without following any link, and hashed from those
  descriptors; `open_verified` keeps them open, and the runtimes load through them (`OpenedBundle.path`), so a file
  renamed over an artifact after the check is never the one loaded.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgekit.bundle.seal import UNSEALED_KEYS, check_seal, seal_manifest  # noqa: F401  (re-exported)
from edgekit.closing import Closing
from edgekit.errors import EdgekitError
from edgekit.json_files import parse_json
from edgekit.safe_files import fd_path, open_beneath, read_fd, sha256_fd

MANIFEST = "edgekit.json"
SCHEMA = "edgekit.bundle/3"
OLDER_SCHEMAS = ("edgekit.bundle/1", "edgekit.bundle/2")
DIRECTORY_FORMATS = ("modelopt-unified", "hf-checkpoint", "edgellm-onnx-dir", "files")
MAX_MANIFEST_BYTES = 16 << 20
MAX_SIDE, MAX_IMAGES = 16384, 16  # image side in pixels, images per call: for build options and manifests alike


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
    top = Path(os.path.realpath(bundle))  # the folder itself may be a link the user made; nothing below it may
    for root, dirs, names, root_fd in os.fwalk(top, follow_symlinks=False):
        for name in sorted(dirs + names):
            rel = (Path(root) / name).relative_to(top).as_posix()
            mode = os.lstat(name, dir_fd=root_fd).st_mode
            if stat.S_ISLNK(mode):
                problems.append(
                    f"{rel}: is a symbolic link (to {os.readlink(name, dir_fd=root_fd)}); "
                    "a sealed bundle holds no links"
                )
            elif stat.S_ISREG(mode):
                if rel != MANIFEST:
                    files.append(rel)
            elif not stat.S_ISDIR(mode):
                problems.append(f"{rel}: is not a regular file")
    return sorted(files), problems


def sha256_file(path: Path) -> str:
    from edgekit.safe_files import sha256_file as _sha

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


class OpenedBundle(Closing):
    """A verified bundle whose artifacts are held open: each descriptor is the one its sha256 was computed from.
    Loaders read through them (`path` for libraries that take a path, `read` for bytes), never by name."""

    def __init__(self, root: Path, root_fd: int, manifest: dict, fds: dict[str, int]):
        self.root, self.manifest = root, manifest
        self._root_fd, self._fds = root_fd, fds

    def fd(self, rel: str) -> int:
        try:
            return self._fds[rel]
        except KeyError:
            raise EdgekitError(f"{self.root}: '{rel}' is not a verified artifact of this bundle") from None

    def has(self, rel: str) -> bool:
        return rel in self._fds

    def path(self, rel: str) -> str:
        """A path that opens the verified file itself (/proc/self/fd/N), whatever its name points at now."""
        return fd_path(self.fd(rel))

    def read(self, rel: str, *, max_bytes: int = 1 << 30) -> bytes:
        return read_fd(self.fd(rel), max_bytes=max_bytes, label=str(self.root / rel))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None


@dataclass
class VerifyReport:
    bundle: Path
    checked: list[str] = field(default_factory=list)  # one line per check that passed
    errors: list[str] = field(default_factory=list)
    manifest: dict | None = None  # what was verified: load from this, never re-read the file
    opened: OpenedBundle | None = None  # keep_open: the artifacts' descriptors that were hashed

    @property
    def ok(self) -> bool:
        return not self.errors


def _open_root(bundle: Path) -> int:
    """The bundle directory (it may be reached through a link the user made; nothing below it may be one)."""
    try:
        return os.open(bundle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EdgekitError(f"{bundle}: bundle directory not found") from None
    except NotADirectoryError:
        raise EdgekitError(f"{bundle}: is not a directory; give a bundle directory") from None
    except OSError as e:
        raise EdgekitError(f"{bundle}: cannot open the bundle directory ({e.strerror})") from None


def _parse_manifest(data: bytes, where: Path) -> dict:
    manifest = parse_json(data, str(where))
    if not isinstance(manifest, dict):
        raise EdgekitError(f"{where}: corrupt manifest (not a JSON object)")
    if manifest.get("schema") in OLDER_SCHEMAS:
        raise EdgekitError(
            f"{where}: schema {manifest['schema']} was written by an older edgekit (its seal is "
            "weaker); rebuild the bundle"
        )
    if manifest.get("schema") != SCHEMA:
        raise EdgekitError(f"{where}: unknown schema {str(manifest.get('schema'))[:80]!r}; this edgekit reads {SCHEMA}")
    for key in ("artifacts", "parts", "model", "target"):
        if not isinstance(manifest.get(key), dict):
            raise EdgekitError(f"{where}: manifest has no '{key}' object")
    return manifest


def _read_manifest_at(bundle: Path, root_fd: int) -> dict:
    path = bundle / MANIFEST
    try:
        fd = open_beneath(root_fd, MANIFEST, label=str(path))
    except EdgekitError as e:
        if "file not found" in e.message:
            raise EdgekitError(
                f"{path}: missing; this is not a complete bundle (a build that was interrupted never writes it)"
            ) from None
        raise
    try:
        return _parse_manifest(read_fd(fd, max_bytes=MAX_MANIFEST_BYTES, label=str(path)), path)
    finally:
        os.close(fd)


def read_manifest(bundle: Path) -> dict:
    """The parsed, schema-checked manifest (not yet its seal or artifacts: verify_bundle does that)."""
    root_fd = _open_root(Path(bundle))
    try:
        return _read_manifest_at(Path(bundle), root_fd)
    finally:
        os.close(root_fd)


def _whole(value, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def structure_errors(manifest: dict) -> list[str]:
    """Paths and field types a runtime relies on: every path safe and hashed, every number in range."""
    errors = []
    artifacts = manifest["artifacts"]
    for rel, entry in sorted(artifacts.items()):
        err = relpath_error(rel, "artifacts")
        if err:
            errors.append(err)
        elif (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not _whole(entry.get("size"), 0, 1 << 50)
        ):
            errors.append(f"artifacts: entry for {rel!r} needs a sha256 string and a whole size in bytes")

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
        if "external_data" in part:  # an ONNX graph's weights in one file beside it (edgekit.export.onnx_files)
            data = part["external_data"]
            err = relpath_error(data, f"parts.{name}.external_data")
            if err or data != f"{rel}.data" or data not in artifacts:
                errors.append(err or f"parts.{name}.external_data: {data!r} must be the hashed artifact {rel}.data")
    tok = manifest.get("tokenizer_dir")
    err = relpath_error(tok, "tokenizer_dir")
    errors += [err] if err else ([] if listed(tok, True) else [f"tokenizer_dir: {tok!r} holds no hashed artifact"])
    text = manifest["model"].get("text") if isinstance(manifest["model"].get("text"), dict) else {}
    max_position = text.get("max_position")
    if not _whole(max_position, 1, 1 << 24):
        errors.append(f"model.text.max_position: {max_position!r} must be a whole number from 1 to {1 << 24}")
        max_position = 1 << 24
    context = manifest.get("context")
    if not _whole(context, 1, max_position):
        errors.append(
            f"context: {context!r} must be a whole number from 1 to the model's max_position ({max_position})"
        )
    pre = manifest.get("preprocessing")
    res = pre.get("resolution") if isinstance(pre, dict) else None
    if not (isinstance(res, list) and len(res) == 2 and all(_whole(x, 1, MAX_SIDE) for x in res)):
        errors.append(f"preprocessing.resolution: {res!r} must be [width, height], each 1 to {MAX_SIDE} pixels")
    vision = manifest["parts"].get("vision")
    if isinstance(vision, dict) and "images" in vision and not _whole(vision["images"], 1, MAX_IMAGES):
        errors.append(f"parts.vision.images: {vision['images']!r} must be a whole number from 1 to {MAX_IMAGES}")
    return errors


def verify_bundle(bundle: str | Path, *, deep: bool = True, keep_open: bool = False) -> VerifyReport:
    """Check schema, seal, every artifact's hash and size, and (deep) that each artifact loads in its runtime.
    keep_open: the report's `opened` holds every artifact open as hashed (the caller closes it)."""
    bundle = Path(bundle)
    report = VerifyReport(bundle)
    root_fd = _open_root(bundle)
    fds: dict[str, int] = {}
    try:
        manifest = _read_manifest_at(bundle, root_fd)
        try:
            report.errors += check_seal(manifest)
        except ValueError as e:  # no canonical form: a number beyond 2^53, NaN
            report.errors.append(f"{MANIFEST}: cannot be canonicalised ({e}); it was edited, rebuild the bundle")
        report.errors += structure_errors(manifest)
        files, problems = walk_bundle(bundle)
        report.errors += problems
        if report.errors:  # an unsafe path is never opened, not even to hash it
            return report
        report.checked.append(f"{MANIFEST}: seal ok, every path inside the bundle")
        listed = manifest["artifacts"]
        present = set(files)
        for rel in sorted(set(listed) - present):
            report.errors.append(f"{rel}: listed in the manifest but missing")
        for rel in sorted(present - set(listed)):
            report.errors.append(f"{rel}: not listed in the manifest (stray or tampered file)")
        for rel in sorted(set(listed) & present):
            entry = listed[rel]
            try:
                fd = open_beneath(root_fd, rel, label=rel)
            except EdgekitError as e:
                report.errors.append(e.message)
                continue
            fds[rel] = fd
            size = os.fstat(fd).st_size
            if size != entry["size"]:
                report.errors.append(f"{rel}: size {size} != manifest {entry['size']}")
            elif sha256_fd(fd) != entry["sha256"]:
                report.errors.append(f"{rel}: sha256 differs from the manifest (modified or corrupt)")
            else:
                report.checked.append(f"{rel}: sha256 ok")
        if report.errors:
            return report
        report.manifest = manifest
        opened = OpenedBundle(bundle, root_fd, manifest, fds)
        root_fd, fds = None, {}  # owned by `opened` now
        if deep:
            from edgekit.bundle.part_checks import check_part

            for name, part in sorted(manifest["parts"].items()):
                try:
                    report.checked.append(f"{name}: {check_part(opened, part)}")
                except EdgekitError as e:
                    report.errors.append(f"{name}: {e.message}")
                except Exception as e:  # a loader's own exception: report it against the artifact
                    report.errors.append(f"{name}: {part.get('path')}: failed to load ({e.__class__.__name__}: {e})")
        if keep_open and report.ok:
            report.opened = opened
        else:
            opened.close()
        return report
    finally:
        for fd in fds.values():
            os.close(fd)
        if root_fd is not None:
            os.close(root_fd)


def open_verified(bundle: str | Path) -> OpenedBundle:
    """A bundle that verifies (seal, paths, ranges, hashes), its artifacts held open as hashed; else one line."""
    report = verify_bundle(bundle, deep=False, keep_open=True)
    if not report.ok:
        raise EdgekitError(f"{bundle}: bundle does not verify: {report.errors[0]}")
    return report.opened
