"""Which files hold a checkpoint's weights, and which of them edgekit may read.

An index's `weight_map` may name only safetensors files inside the checkpoint folder (a relative name, no `..`, no
link leading out, except into the Hugging Face hub cache's blobs/ of the same repository); pickle files (`.bin`,
`.pt`, `.pth`) only with --allow-pickle, whether found by name or named by the index; weights must be float (an int8
or FP8 tensor without its scales would be re-quantized from its raw codes).
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.json_files import read_json_object
from edgekit.model.safetensors_header import TensorInfo

INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth")


# Float weights only: an int8 or FP8 tensor without its scales would be "quantized" from its raw integers.
FLOAT_DTYPES = ("F32", "F16", "BF16")
SHARD_SUFFIX = ".safetensors"


def _inside(path: Path, target: Path) -> bool:
    """True when `target` resolves inside the checkpoint directory, or into the Hugging Face hub cache's blobs/ of
    the same repository (snapshots/<rev>/file -> ../../blobs/<sha>, how `huggingface-cli download` lays files)."""
    root, real = path.resolve(), target.resolve()
    if real == root or root in real.parents:
        return True
    repo = root.parent.parent
    return root.parent.name == "snapshots" and real.parent == repo / "blobs"


def _index_shards(path: Path, index: Path, allow_pickle: bool) -> list[Path]:
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise EdgekitError(f"{index}: no 'weight_map'")
    names = set()
    for tensor, rel in weight_map.items():
        if not isinstance(rel, str) or not rel:
            raise EdgekitError(f"{index}: weight_map entry for '{tensor}' is {rel!r}, not a file name")
        names.add(rel)
    shards = []
    for rel in sorted(names):
        parts = rel.split("/")
        if rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
            raise EdgekitError(
                f"{index}: weight_map names {rel!r}; shards must be files inside the checkpoint folder "
                "(a relative name, no '..')"
            )
        if not rel.endswith(SHARD_SUFFIX) and not (allow_pickle and rel.endswith((".bin", ".pt", ".pth"))):
            raise EdgekitError(
                f"{index}: weight_map names {rel!r}; edgekit reads safetensors shards only "
                "(pickle weights can run code when loaded: --allow-pickle if you trust the source)"
            )
        shard = path / rel
        if not shard.exists():
            raise EdgekitError(f"{shard}: shard listed in {INDEX_FILE} is missing; re-download it")
        if not _inside(path, shard):
            raise EdgekitError(
                f"{shard}: leads outside the checkpoint folder (to {shard.resolve()}); copy the files into the folder"
            )
        shards.append(shard)
    return shards


def weight_shards(path: Path, allow_pickle: bool) -> list[Path]:
    index = path / INDEX_FILE
    if index.exists():
        return _index_shards(path, index, allow_pickle)
    shards = sorted(path.glob("*" + SHARD_SUFFIX))
    if shards:
        outside = [s for s in shards if not _inside(path, s)]
        if outside:
            raise EdgekitError(
                f"{outside[0]}: leads outside the checkpoint folder (to {outside[0].resolve()}); copy "
                "the files into the folder"
            )
        return shards
    pickles = sorted(p for pat in PICKLE_PATTERNS for p in path.glob(pat))
    if pickles:
        if not allow_pickle:
            raise EdgekitError(
                f"{pickles[0]}: pickle weights can run arbitrary code when loaded; edgekit reads safetensors only. "
                f"Convert the checkpoint to safetensors, or pass --allow-pickle if you trust its source"
            )
        return pickles
    raise EdgekitError(f"{path}: no weights found (expected {INDEX_FILE} or *.safetensors)")


def read_pickle_index(path: Path, into: dict) -> dict[str, TensorInfo]:
    """Only with --allow-pickle: load a torch pickle (weights_only, memory-mapped) and describe its tensors."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # torch raises many types for a bad pickle
        raise EdgekitError(f"{path}: cannot read pickle weights ({e.__class__.__name__}: {e})") from None
    dtype_names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    infos = {}
    for name, t in state.items():
        into[name] = t
        infos[name] = TensorInfo(name, dtype_names.get(t.dtype, str(t.dtype)), tuple(t.shape), -1, -1, path)
    return infos
