"""The calibration cache: one directory per (checkpoint, samples, config) key, one file per finished layer.

Layer files hold codes, params, folded norms, activation scales and errors; `hidden.safetensors` holds the
outputs of the last finished layer (what a resumed run needs) and is removed when the calibration ends, so a
finished entry is codes only. Files are written atomically, layers before the hidden states they produced.
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
    input_scales: dict = field(default_factory=dict)  # linear name -> per-tensor INT8 activation scale (W8A8)
    layer_errors: dict = field(default_factory=dict)  # linear name -> relative output error on calibration inputs
    record: dict = field(default_factory=dict)  # what was calibrated on: checkpoint and samples hashes, config


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
                if p.name != LOCK_FILE and p.name.startswith(".") and (p.name.endswith(".tmp") or p.name.startswith(".tmp")):
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
        save_file({f"hidden::{k:06d}": h.contiguous() for k, h in enumerate(hidden)}, str(tmp),
                  metadata={"layer": str(layer)})


def resume_point(work: Path, n_layers: int) -> tuple[int, list[torch.Tensor] | None]:
    """(first layer to run, its input hidden states or None for layer 0's). Layer files are written before the
    hidden states they produced, so a kill between the two reruns that layer (deterministically)."""
    from safetensors import safe_open

    done = 0
    while done < n_layers and (work / f"layer_{done:04d}.safetensors").is_file():
        done += 1
    if done == n_layers:
        return done, None
    if done and (work / HIDDEN_FILE).is_file():
        with safe_open(str(work / HIDDEN_FILE), framework="pt") as f:
            last = int(f.metadata()["layer"])
            if last < done:
                return last + 1, [f.get_tensor(k) for k in sorted(f.keys())]
    return 0, None


def load_layer(path: Path, with_codes: bool = True):
    from safetensors import safe_open

    from edgekit.quant.grids import QuantizedWeight

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["edgekit"])
        keys = sorted(f.keys())
        quantized = {}
        for name, (grid, shape) in (meta["grids"].items() if with_codes else ()):
            params = {k.rsplit("::", 1)[1]: f.get_tensor(k) for k in keys if k.startswith(f"q::{name}::p::")}
            quantized[name] = QuantizedWeight(grid, tuple(shape), f.get_tensor(f"q::{name}::codes"), params)
        folded = {k[len("fold::"):]: f.get_tensor(k) for k in keys if k.startswith("fold::")}
        scales = {k[len("ascale::"):]: f.get_tensor(k)[0] for k in keys if k.startswith("ascale::")}
    return quantized, folded, scales, meta["errors"]


class LayerFiles(Mapping):
    """Quantized weights of every layer, read from the cache one layer file at a time (memory stays one layer)."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self._where: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                for name in json.loads(h.metadata()["edgekit"])["grids"]:
                    self._where[name] = f
        self._loaded: tuple[Path | None, dict] = (None, {})

    def __getitem__(self, name: str):
        f = self._where[name]
        if self._loaded[0] != f:
            self._loaded = (f, load_layer(f)[0])
        return self._loaded[1][name]

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def result_from_files(files: list[Path], record: dict) -> CalibrationResult:
    """A calibration result over finished layer files: the small per-layer extras (folded norms, activation scales,
    errors) loaded whole; the codes stay on disk until asked for."""
    result = CalibrationResult(LayerFiles(files), record=record)
    for f in files:
        _, folded, scales, errors = load_layer(f, with_codes=False)
        result.folded.update(folded), result.input_scales.update(scales), result.layer_errors.update(errors)
    return result


def cache_key(content_hash: str, samples_hash: str, cfg) -> str:
    blob = json.dumps({"checkpoint": content_hash, "samples": samples_hash, "config": cfg.key()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
