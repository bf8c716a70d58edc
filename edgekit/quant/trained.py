"""A QAT checkpoint's trained codes (edgekit.qat writes them) as a calibration result, for build and quantize.

QAT_DIR/edgekit-qat.json names the format and holds the sha256 of every qat/layer_NNNN.safetensors; the files are
verified before they are read, and the writers pack their codes and params as they are.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError

QAT_MANIFEST = "edgekit-qat.json"


def is_qat_dir(path: str | Path) -> bool:
    return (Path(path) / QAT_MANIFEST).is_file()


def qat_result(path: str | Path, grid: str, overrides: tuple = ()):
    """A QAT checkpoint's trained codes as a CalibrationResult (the writers pack it as it is); hashes verified."""
    from edgekit.model.checkpoint import sha256_file
    from edgekit.quant.calib_cache import result_from_files

    from edgekit.json_files import read_json_object

    path = Path(path)
    manifest = read_json_object(path / QAT_MANIFEST)
    for key in ("format", "init", "config", "source", "losses", "layers"):
        if key not in manifest:
            raise EdgekitError(f"{path / QAT_MANIFEST}: no '{key}'; not a QAT checkpoint edgekit wrote")
    if overrides:
        raise EdgekitError(f"{path}: a QAT checkpoint holds one format ({manifest['format']}); mixed precision "
                           "cannot re-choose its groups")
    if manifest["format"] != grid:
        raise EdgekitError(f"{path}: trained for {manifest['format']}, asked for {grid}; quantize it with --format "
                           f"{manifest['format']} or build it with the precision/group size that gives that format "
                           f"(or train another QAT run for {grid})")
    files = []
    for rel, digest in sorted(manifest["layers"].items()):
        f = path / rel
        if not f.is_file() or sha256_file(f) != digest:
            raise EdgekitError(f"{f}: missing or changed since training (sha256 differs from {QAT_MANIFEST})")
        files.append(f)
    return result_from_files(files, {"qat": {k: manifest[k] for k in ("format", "init", "config", "source", "losses")}})
