"""What a QAT run leaves on disk.

While it runs, QAT_DIR/.qat-work holds (each file atomic):
  run.json                 the settings and source checkpoint the work belongs to (another run is refused)
  inputs.safetensors       layer-0 inputs of the calibration sequences (vision embeddings included), for phase 2
  layer_NNNN.safetensors   phase 1's result per layer, in the calibration cache's layer format
  hidden.safetensors       the full-precision and the quantized stream after the last finished layer
  teacher.safetensors      the teacher's last hidden states per sequence (its logits are one matmul away)
  progress.safetensors     trainables + Adam state of the phase/layer in progress, every K steps
A killed run resumes from these and, steps being deterministic in (seed, layer, step), ends with the same bytes.

A finished QAT_DIR is a checkpoint (the source's files, hard-linked where possible) plus
  qat/layer_NNNN.safetensors  trained codes + params per layer (what build/quantize pack, never re-rounded)
  edgekit-qat.json            format, init, settings, losses and the sha256 of every qat/ file; written last,
                              so a directory without it is not a QAT checkpoint
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from edgekit.errors import EdgekitError
from edgekit.quant.trained import QAT_MANIFEST

WORK = ".qat-work"
PROGRESS = "progress.safetensors"


def save_progress(path: Path, tag: dict, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Trainables and Adam moments of a phase in progress (safetensors + JSON metadata; no pickle)."""
    from safetensors.torch import save_file

    from edgekit.atomic import atomic_path

    params = [p for p in module.parameters() if p.requires_grad]
    tensors = {f"param::{i:05d}": p.detach().cpu().contiguous() for i, p in enumerate(params)}
    steps = {}
    for i, p in enumerate(params):
        st = optimizer.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                tensors[f"opt::{i:05d}::{k}"] = st[k].cpu().contiguous()
        if "step" in st:
            steps[i] = float(st["step"])
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"tag": json.dumps(tag, sort_keys=True), "steps": json.dumps(steps)})


def load_progress(
    path: Path, tag: dict, module: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[float]]:
    """Restore a saved phase when its tag matches; returns the step to continue from (0: nothing saved) and the
    losses of the steps before it (so a resumed run reports the same losses as one never killed)."""
    from safetensors import safe_open

    from edgekit.json_files import parse_json

    if not path.is_file():
        return 0, []
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        saved = parse_json(meta["tag"], f"{path} (tag)")
        if {k: v for k, v in saved.items() if k not in ("step", "losses")} != tag:
            return 0, []
        steps = {int(k): v for k, v in parse_json(meta["steps"], f"{path} (steps)").items()}
        params = [p for p in module.parameters() if p.requires_grad]
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(f.get_tensor(f"param::{i:05d}"))
                if i in steps:
                    optimizer.state[p] = {
                        "step": torch.tensor(steps[i]),  # Adam keeps its step count on the host
                        "exp_avg": f.get_tensor(f"opt::{i:05d}::exp_avg").to(p.device),
                        "exp_avg_sq": f.get_tensor(f"opt::{i:05d}::exp_avg_sq").to(p.device),
                    }
    return int(saved["step"]), [float(x) for x in saved.get("losses", [])]


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from edgekit.atomic import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def check_out_dir(out: Path, identity: dict) -> Path:
    """The work directory of `out` for this run; refuses a directory holding anything else."""
    from edgekit.atomic import write_json

    work = out / WORK
    if (out / QAT_MANIFEST).is_file():
        raise EdgekitError(f"{out}: already holds a finished QAT checkpoint; give another --out")
    if out.exists() and not out.is_dir():
        raise EdgekitError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(p.name != WORK for p in out.iterdir()):
        raise EdgekitError(
            f"{out}: not empty and not a QAT run's directory; give a new or empty --out "
            "(edgekit never deletes a directory it did not create)"
        )
    run_file = work / "run.json"
    if run_file.is_file():
        from edgekit.json_files import read_json

        if read_json(run_file) != json.loads(json.dumps(identity)):  # as written (tuples are lists in JSON)
            raise EdgekitError(
                f"{out}: holds an unfinished QAT run with other settings or another checkpoint; "
                f"rerun with the same settings to resume it, or give another --out"
            )
    else:
        write_json(run_file, identity)
    return work


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (atomic, no extra space) where the filesystem allows, else a copy that appears whole."""
    from edgekit.atomic import atomic_path

    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        with atomic_path(dst) as tmp:
            shutil.copy2(src, tmp)


def write_qat_dir(out: Path, ck, layer_files: list[Path], record: dict) -> None:
    """The finished QAT checkpoint: source files, trained layers, then the manifest that makes it one."""
    from edgekit.atomic import write_json
    from edgekit.safe_files import sha256_file

    for src in ck.files_for_hash():
        _link_or_copy(src, out / src.relative_to(ck.path))
    hashes = {}
    for f in layer_files:
        _link_or_copy(f, out / "qat" / f.name)
        hashes[f"qat/{f.name}"] = sha256_file(out / "qat" / f.name)
    # The source files as trained from: a QAT_DIR whose weights were replaced afterwards is refused at pack time.
    write_json(out / QAT_MANIFEST, {**record, "layers": hashes, "source_files": ck.file_hashes()})
    shutil.rmtree(out / WORK, ignore_errors=True)
