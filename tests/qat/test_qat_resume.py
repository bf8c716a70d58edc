"""A QAT run killed with SIGKILL in phase 1 and again in phase 2, then resumed, ends with the same trained codes
and scales, and the same edgekit-qat.json (losses included), as a run never interrupted (same seed, same settings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgekit.cli import main

ARGS = [
    "--format",
    "gguf:q4_k",
    "--init",
    "rtn",
    "--n",
    "6",
    "--batch",
    "2",
    "--block-epochs",
    "3",
    "--steps",
    "12",
    "--checkpoint-every",
    "2",
]


def _tag(progress: Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(progress), framework="pt") as f:
            return json.loads(f.metadata()["tag"])
    except Exception:  # not written yet
        return None


def _kill_when(proc: subprocess.Popen, progress: Path, want: dict, timeout: float = 300) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        tag = _tag(progress)
        if tag and all(tag.get(k) == v for k, v in want.items()):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return tag
        assert proc.poll() is None, f"finished before reaching {want}: {proc.stderr.read()[-2000:]}"
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"never reached {want}")


def _layers(qat_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted((qat_dir / "qat").glob("layer_*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    return out


@pytest.mark.slow
def test_kill_9_in_each_phase_then_resume_equals_an_uninterrupted_run(tiny_ckpt, tmp_path):
    cache = tmp_path / "calib"
    whole = tmp_path / "whole"
    assert main(["qat", str(tiny_ckpt), *ARGS, "--cache", str(cache), "--out", str(whole)]) == 0

    out = tmp_path / "killed"
    progress = out / ".qat-work" / "progress.safetensors"
    cmd = [sys.executable, "-m", "edgekit.cli", "qat", str(tiny_ckpt), *ARGS, "--cache", str(cache), "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tag = _kill_when(
        subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env), progress, {"phase": "block", "layer": 1}
    )
    assert tag["step"] < 9 and not (out / "edgekit-qat.json").exists()
    tag = _kill_when(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env), progress, {"phase": "distill"})
    assert tag["step"] < 12 and not (out / "edgekit-qat.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = _layers(whole), _layers(out)
    assert set(a) == set(b) and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not (out / ".qat-work").exists()
    # the manifest too, byte for byte: losses of the steps run before each kill travel in the checkpoints
    assert (whole / "edgekit-qat.json").read_bytes() == (out / "edgekit-qat.json").read_bytes()
