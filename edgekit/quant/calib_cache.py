"""The calibration cache: one directory per (checkpoint, samples, config) key, one file per finished layer.

Layer files hold codes, params, folded norms, activation scales and errors; `hidden.safetensors` holds the
outputs of the last finished layer (what a resumed run needs) and is removed when the calibration ends, so a
finished entry is codes only. Files are written atomically, layers before the hidden states they produced.

Every file's sha256 is recorded in `digests.json` as it is written, and a file is read only through bytes whose
digest matches (read once, hashed, then parsed from those same bytes): a flipped bit in a cached code, or a file
swapped in, is recomputed (said in one line), never packed into a bundle.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch


@dataclass
class CalibrationResult:
    quantized: Mapping  # linear name -> QuantizedWeight (codes of W·s where a smoothing scale s applies), read lazily
    folded: dict = field(default_factory=dict)  # norm weight name -> float32 tensor with 1/s folded in
    input_scales: dict = field(default_factory=dict)  # linear name -> per-tensor activation scale (W8A8, NVFP4)
    layer_errors: dict = field(default_factory=dict)  # linear name -> relative output error on calibration inputs
    record: dict = field(default_factory=dict)  # what was calibrated on: checkpoint and samples hashes, config


DIGESTS_FILE = "digests.json"


def notice(message: str) -> None:
    """One line on stderr for a cache problem edgekit repairs by itself."""
    import sys

    print(f"note: {message}", file=sys.stderr)


def read_digests(work: Path) -> dict[str, str]:
    from edgekit.json_files import read_json_object

    try:
        digests = read_json_object(work / DIGESTS_FILE, optional=True)
    except Exception as e:  # a damaged digests file: nothing in this entry can be trusted
        notice(f"{work / DIGESTS_FILE}: unreadable ({e}); its entry is recomputed")
        return {}
    return {k: v for k, v in digests.items() if isinstance(k, str) and isinstance(v, str)}


def _record_digest(path: Path) -> None:
    """After `path` was written (atomically): its sha256 into the folder's digests.json (also atomic)."""
    from edgekit.atomic import write_json
    from edgekit.safe_files import sha256_file

    digests = read_digests(path.parent)
    digests[path.name] = sha256_file(path)
    write_json(path.parent / DIGESTS_FILE, digests)


def read_verified(path: Path, digest: str | None) -> bytes:
    """The file's bytes when their sha256 is `digest`; EdgekitError naming the file otherwise."""
    import hashlib

    from edgekit.errors import EdgekitError
    from edgekit.safe_files import read_regular

    data = read_regular(path, max_bytes=1 << 40)
    if digest is None or hashlib.sha256(data).hexdigest() != digest:
        raise EdgekitError(
            f"{path}: changed since it was written (its sha256 differs from the one recorded); "
            "delete it and rerun to recompute it"
        )
    return data


def _parse_safetensors(data: bytes, where: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a safetensors file held in memory."""
    import struct

    from safetensors.torch import load

    from edgekit.json_files import parse_json

    (n,) = struct.unpack("<Q", data[:8])
    header = parse_json(data[8 : 8 + n], f"{where} (header)")
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return load(data), meta


def save_layer(path: Path, quantized: dict, folded: dict, input_scales: dict, errors: dict) -> None:
    from safetensors.torch import save_file

    from edgekit.atomic import atomic_path

    tensors, meta = {}, {"grids": {}, "errors": errors}
    for name, qw in quantized.items():
        tensors[f"q::{name}::codes"] = qw.codes.contiguous()
        for k, v in qw.params.items():
            tensors[f"q::{name}::p::{k}"] = v.contiguous()
        meta["grids"][name] = [qw.grid, list(qw.shape)]
    for name, v in folded.items():
        tensors[f"fold::{name}"] = v.contiguous()
    for name, v in input_scales.items():
        tensors[f"ascale::{name}"] = v.reshape(1).clone()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"edgekit": json.dumps(meta, sort_keys=True)})
    _record_digest(path)


HIDDEN_FILE = "hidden.safetensors"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def entry_lock(work: Path) -> Iterator[None]:
    """Hold one cache entry exclusively: a second calibration of the same key (another build sharing the cache)
    waits, then finds the layers finished. Temporary files a killed run left behind are removed under the lock."""
    work.mkdir(parents=True, exist_ok=True)
    with open(work / LOCK_FILE, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            for p in work.iterdir():  # atomic writes' temporaries (".NAME.xxxx.tmp", ".tmpxxxx") of a killed run
                if (
                    p.name != LOCK_FILE
                    and p.name.startswith(".")
                    and (p.name.endswith(".tmp") or p.name.startswith(".tmp"))
                ):
                    p.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def save_hidden(work: Path, layer: int, hidden: list[torch.Tensor]) -> None:
    """The outputs of the last finished layer: all a resumed run needs (one file, replaced per layer, so a
    finished cache holds codes only, not the hidden states of every layer)."""
    from safetensors.torch import save_file

    from edgekit.atomic import atomic_path

    with atomic_path(work / HIDDEN_FILE) as tmp:
        save_file(
            {f"hidden::{k:06d}": h.contiguous() for k, h in enumerate(hidden)}, str(tmp), metadata={"layer": str(layer)}
        )
    _record_digest(work / HIDDEN_FILE)


def layer_file(work: Path, i: int) -> Path:
    return work / f"layer_{i:04d}.safetensors"


def finished_layers(work: Path, n_layers: int, digests: dict[str, str] | None = None) -> int:
    """How many layer files, from layer 0 on, hold the bytes recorded for them. At the first that does not, it and
    every later layer and the hidden states are removed (said in one line): they are recomputed."""
    digests = read_digests(work) if digests is None else digests
    done = 0
    while done < n_layers and layer_file(work, done).is_file():
        try:
            read_verified(layer_file(work, done), digests.get(layer_file(work, done).name))
        except Exception as e:
            notice(f"calibration cache: {getattr(e, 'message', e)}; recomputing from layer 0")
            for i in range(done, n_layers):
                layer_file(work, i).unlink(missing_ok=True)
            (work / HIDDEN_FILE).unlink(missing_ok=True)
            return 0
        done += 1
    return done


def resume_point(work: Path, n_layers: int) -> tuple[int, list[torch.Tensor] | None]:
    """(first layer to run, its input hidden states or None for layer 0's). Layer files are written before the
    hidden states they produced, so a kill between the two reruns that layer (deterministically). A layer or hidden
    file whose bytes no longer match their recorded sha256 is dropped with what follows it, and recomputed."""
    digests = read_digests(work)
    done = finished_layers(work, n_layers, digests)
    if done == 0:
        return 0, None
    if done == n_layers:
        return done, None
    if done and (work / HIDDEN_FILE).is_file():
        try:
            tensors, meta = _parse_safetensors(
                read_verified(work / HIDDEN_FILE, digests.get(HIDDEN_FILE)), work / HIDDEN_FILE
            )
        except Exception as e:
            notice(f"calibration cache: {getattr(e, 'message', e)}; recomputing from layer 0")
            (work / HIDDEN_FILE).unlink(missing_ok=True)
            return 0, None
        last = int(meta["layer"])
        if last < done:
            return last + 1, [tensors[k] for k in sorted(tensors)]
    return 0, None


def load_layer(path: Path, with_codes: bool = True, digest: str | None = None):
    """One layer file's (quantized, folded, input scales, errors), parsed from bytes whose sha256 is `digest` (default:
    the one recorded beside it in digests.json)."""
    from edgekit.json_files import parse_json
    from edgekit.quant.grids import QuantizedWeight

    if digest is None:
        digest = read_digests(path.parent).get(path.name)
    tensors, meta_raw = _parse_safetensors(read_verified(path, digest), path)
    meta = parse_json(meta_raw["edgekit"], f"{path} (metadata)")
    keys = sorted(tensors)
    quantized = {}  # without codes: name -> None
    for name, (grid, shape) in meta["grids"].items():
        if not with_codes:
            quantized[name] = None
            continue
        params = {k.rsplit("::", 1)[1]: tensors[k] for k in keys if k.startswith(f"q::{name}::p::")}
        quantized[name] = QuantizedWeight(grid, tuple(shape), tensors[f"q::{name}::codes"], params)
    folded = {k[len("fold::") :]: tensors[k] for k in keys if k.startswith("fold::")}
    scales = {k[len("ascale::") :]: tensors[k][0] for k in keys if k.startswith("ascale::")}
    return quantized, folded, scales, meta["errors"]


class LayerFiles(Mapping):
    """Quantized weights of every layer, read from the cache one layer file at a time (memory stays one layer), each
    file through bytes whose sha256 matches its recorded digest."""

    def __init__(self, where: dict[str, Path], digests: dict[Path, str]):
        self._where = where  # linear name -> its layer file
        self._digests = digests
        self._loaded: tuple[Path | None, dict] = (None, {})

    def __getitem__(self, name: str):
        f = self._where[name]
        if self._loaded[0] != f:
            self._loaded = (f, load_layer(f, digest=self._digests.get(f))[0])
        return self._loaded[1][name]

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def result_from_files(files: list[Path], record: dict, digests: dict[Path, str] | None = None) -> CalibrationResult:
    """A calibration result over finished layer files: the small per-layer extras (folded norms, activation scales,
    errors) loaded whole; the codes stay on disk until asked for. digests: each file's sha256 (default: the ones
    recorded beside them); every read is checked against it."""
    if digests is None:
        digests = {f: read_digests(f.parent).get(f.name) for f in files}
    where: dict[str, Path] = {}
    result = CalibrationResult(LayerFiles(where, digests), record=record)
    for f in files:
        names, folded, scales, errors = load_layer(f, with_codes=False, digest=digests.get(f))
        where.update(dict.fromkeys(names, f))
        result.folded.update(folded), result.input_scales.update(scales), result.layer_errors.update(errors)
    return result


def cache_key(content_hash: str, samples_hash: str, cfg) -> str:
    blob = json.dumps({"checkpoint": content_hash, "samples": samples_hash, "config": cfg.key()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
