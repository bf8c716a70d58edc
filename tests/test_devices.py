"""--device (issue 29): parsed once (edgekit/devices.py), refused in one line where no GPU is, and the CPU path through
the device-aware code gives the bytes it gave before; scripts/gpu_check.sh resolves and rehearses on the CPU.

CI has no GPU: the CUDA side runs in scripts/gpu_check.sh on the first machine that has one (README, "On a GPU")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgekit.devices import resolve_device
from edgekit.errors import EdgekitError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cli"))
from corpus import cli, one_line_error  # noqa: E402

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")


def test_device_forms_are_parsed_and_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu") and resolve_device(" CPU ") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cpu:1", "auto:0", "cuda:-1", "cuda:0:1", "mps"):
        with pytest.raises(EdgekitError, match="expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    with pytest.raises(EdgekitError, match="no CUDA GPU here"):
        resolve_device("cuda")
    # a machine with two GPUs, as torch would report it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0) and resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("CUDA:1") == torch.device("cuda", 1)
    with pytest.raises(EdgekitError, match=r"has 2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


@no_gpu
@pytest.mark.parametrize(
    "command",
    [
        ["quantize", "{ckpt}", "--method", "rtn", "--evaluate", "0", "--out", "{out}/d.gguf", "--cache", "{out}/c"],
        ["calibrate", "{ckpt}", "--method", "gptq", "--out", "{out}/c"],
        ["build", "{ckpt}", "--target", "cpu", "--out", "{out}/b"],
        ["qat", "{ckpt}", "--out", "{out}/q", "--cache", "{out}/c"],
        ["run", "{ckpt}", "--prompt", "hi"],
    ],
)
def test_device_cuda_without_a_gpu_is_one_line_and_writes_nothing(tiny_ckpt, tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(ckpt=tiny_ckpt, out=out) for a in command] + ["--device", "cuda:0"]
    one_line_error(cli(*args, timeout=300), 2, "--device cuda:0: no CUDA GPU here", "use --device cpu or auto")
    assert list(out.iterdir()) == [], list(out.iterdir())


def test_quantize_on_device_cpu_is_byte_identical_to_the_default(tiny_ckpt, tmp_path):
    """GPTQ (every device-aware step: vision tower, Hessians, GPTQ columns, codes back to the host) with --device cpu
    and with the default: the same GGUF and report bytes."""
    outs = []
    for name, extra in (("default", []), ("cpu", ["--device", "cpu"])):
        d = tmp_path / name
        d.mkdir()
        proc = cli(
            "quantize",
            tiny_ckpt,
            "--method",
            "gptq",
            "--n",
            "3",
            "--evaluate",
            "2",
            "--out",
            d / "d.gguf",
            "--cache",
            d / "cache",
            *extra,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]
        outs.append(d)
    assert (outs[0] / "d.gguf").read_bytes() == (outs[1] / "d.gguf").read_bytes()
    reports = [json.loads((d / "d.quantization.json").read_text()) for d in outs]
    assert reports[0] == reports[1] and reports[0]["fidelity"]["kl"] > 0


def test_gpu_check_script_parses_and_its_dry_run_touches_no_gpu(tmp_path):
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "gpu_check.sh")]).returncode == 0
    proc = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "gpu_check.sh"),
            "--dry-run",
            "--work",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert list(summary) == ["env", "kernels", "sanitizer", "bench", "gptq", "qat", "build"]
    assert {r["status"] for r in summary.values()} <= {"DRY-RUN", "SKIP"}, summary
    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--steps", "kernels,bogus"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown step(s) ['bogus']" in bad.stderr


@pytest.mark.slow
def test_gpu_check_rehearsal_runs_its_own_code_on_the_cpu(tmp_path):
    """The gptq and qat steps end to end with 'cpu' standing in for the GPU: the script's comparisons then see
    identical results (so its first GPU run fails only for the GPU's reasons). The build step is two `edgekit build`
    commands differing in --device: its dry run resolves them (a rehearsal would cost two Edge-LLM exports in CI)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "gpu_check.py"),
            "--rehearse",
            "--steps",
            "gptq,qat",
            "--n-samples",
            "4",
            "--n-eval",
            "2",
            "--work",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert list(summary) == ["env", "gptq", "qat"], summary
    gptq, qat = summary["gptq"]["tiny"], summary["qat"]
    assert gptq["identical_codes"] == 1.0 and gptq["kl_cpu"] == gptq["kl_gpu"] > 0, gptq
    assert qat["identical_codes"] == 1.0 and qat["loss_rel_diff"] == 0.0 and qat["worst_scale_rel_diff"] == 0.0, qat
