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


def method_label(path: str | Path, method: str) -> str:
    """What made a checkpoint's decoder codes, for a manifest: a QAT checkpoint's are trained from its init."""
    from edgekit.json_files import read_json_object

    return f"qat from {read_json_object(Path(path) / QAT_MANIFEST)['init']}" if is_qat_dir(path) else method


def trained_from(path: str | Path) -> dict:
    """A QAT checkpoint's source: the full-precision checkpoint it was trained from (what `bench --reference` is)."""
    from edgekit.json_files import read_json_object

    return {"trained_from": read_json_object(Path(path) / QAT_MANIFEST)["source"]} if is_qat_dir(path) else {}


def qat_result(path: str | Path, grid: str, overrides: tuple = ()):
    """A QAT checkpoint's trained codes as a CalibrationResult (the writers pack it as it is). Everything is checked
    against edgekit-qat.json first: one layer file per decoder layer, named qat/layer_NNNN.safetensors (nothing
    outside the folder), each read through bytes of its recorded sha256, and the checkpoint files beside them equal
    to the source that was trained (a replaced model.safetensors is not packed as if trained)."""
    from edgekit.json_files import read_json_object
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.calib_cache import result_from_files

    path = Path(path)
    where = path / QAT_MANIFEST
    manifest = read_json_object(where)
    for key in ("format", "init", "config", "source", "losses", "layers", "source_files"):
        if key not in manifest:
            raise EdgekitError(f"{where}: no '{key}'; not a QAT checkpoint this edgekit wrote (retrain it)")
    if overrides:
        raise EdgekitError(
            f"{path}: a QAT checkpoint holds one format ({manifest['format']}); mixed precision "
            "cannot re-choose its groups"
        )
    if manifest["format"] != grid:
        raise EdgekitError(
            f"{path}: trained for {manifest['format']}, asked for {grid}; quantize it with --format "
            f"{manifest['format']} or build it with the precision/group size that gives that format "
            f"(or train another QAT run for {grid})"
        )
    ck = open_checkpoint(path)
    sources = manifest["source_files"]
    now = {rel: digest for rel, digest in ck.file_hashes().items() if rel != QAT_MANIFEST}
    if not isinstance(sources, dict) or now != sources:
        changed = sorted(set(now) ^ set(sources if isinstance(sources, dict) else {}))
        changed += (
            sorted(r for r in set(now) & set(sources) if now[r] != sources[r]) if isinstance(sources, dict) else []
        )
        raise EdgekitError(
            f"{path}: {', '.join(changed[:3]) or 'its files'} differ from the checkpoint it was trained "
            f"from ({QAT_MANIFEST} source_files); retrain, or restore the files"
        )
    layers = manifest["layers"]
    expected = {layer_rel(i) for i in range(ck.text.num_layers)}
    if not isinstance(layers, dict) or set(layers) != expected:
        got = set(layers) if isinstance(layers, dict) else set()
        odd = sorted(got - expected)[:2] + sorted(expected - got)[:2]
        raise EdgekitError(
            f"{where}: 'layers' must list exactly {len(expected)} files qat/layer_NNNN.safetensors, one "
            f"per decoder layer (differs at {', '.join(map(repr, odd))}); retrain it"
        )
    files = [path / rel for rel in sorted(layers)]
    digests = {path / rel: layers[rel] for rel in layers}
    return result_from_files(
        files, {"qat": {k: manifest[k] for k in ("format", "init", "config", "source", "losses")}}, digests
    )


def layer_rel(i: int) -> str:
    return f"qat/layer_{i:04d}.safetensors"
