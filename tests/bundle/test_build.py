"""edgekit build / verify / run --bundle: atomic, resumable, reproducible bundles (CPU gguf path)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.bundle.manifest import MANIFEST, verify_bundle
from edgekit.cli import main


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cpu_bundle(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "cpu_int4"
    assert main(["build", str(tiny_ckpt), "--target", "cpu", "--precision", "int4", "--out", str(out)]) == 0
    return out


def test_cpu_bundle_verifies_and_declares_parts(cpu_bundle, tiny_ckpt):
    report = verify_bundle(cpu_bundle)
    assert report.ok, report.errors
    m = json.loads((cpu_bundle / MANIFEST).read_text())
    assert m["parts"]["decoder"]["format"] == "gguf" and m["parts"]["decoder"]["precision"] == "q4_k"
    assert m["parts"]["vision"]["format"] == "onnx"
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    assert m["model"]["text"]["num_layers"] == cfg["num_hidden_layers"]
    assert m["model"]["mrope_section"] == cfg["rope_scaling"]["mrope_section"]
    assert m["source"]["files"]["config.json"]
    for rel, entry in m["artifacts"].items():
        assert (cpu_bundle / rel).stat().st_size == entry["size"]
    assert not any(k in json.dumps(m) for k in ("partial", str(cpu_bundle)))  # no paths of this build inside


def test_run_bundle_answers(cpu_bundle, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    img = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng().random((221, 397, 3)) * 255).astype("uint8")).save(img)
    assert (
        main(
            [
                "run",
                "--bundle",
                str(cpu_bundle),
                "--image",
                str(img),
                "--prompt",
                "Is the road clear?",
                "--max-new-tokens",
                "6",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert 1 <= len(out["token_ids"]) <= 6 and "GGUF" in out["backend"]


def test_tampered_byte_fails_naming_artifact(cpu_bundle, tmp_path, capsys):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(cpu_bundle, copy)
    target = copy / "decoder" / "decoder.gguf"
    data = bytearray(target.read_bytes())
    data[random.randrange(len(data))] ^= 0x01
    target.write_bytes(bytes(data))
    assert main(["verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert "decoder/decoder.gguf" in err and "sha256" in err


def test_stray_file_and_missing_manifest_fail(cpu_bundle, tmp_path, capsys):
    import shutil

    copy = tmp_path / "stray"
    shutil.copytree(cpu_bundle, copy)
    (copy / "vision" / "extra.bin").write_bytes(b"x")
    assert not verify_bundle(copy).ok
    (copy / "vision" / "extra.bin").unlink()
    (copy / MANIFEST).unlink()
    assert main(["verify", str(copy)]) == 2
    assert "not a complete bundle" in capsys.readouterr().err


def test_two_builds_identical(cpu_bundle, tiny_ckpt, tmp_path):
    again = tmp_path / "again"
    assert main(["build", str(tiny_ckpt), "--target", "cpu", "--precision", "int4", "--out", str(again)]) == 0
    assert _tree(again) == _tree(cpu_bundle)


def test_unfit_build_refused_before_work(tiny_ckpt, tmp_path, capsys):
    assert (
        main(["build", str(tiny_ckpt), "--target", "orin-nano-8", "--precision", "fp32", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "does not support precision fp32" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_kill9_mid_build_then_resume_is_identical(cpu_bundle, tiny_ckpt, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "edgekit.cli",
        "build",
        str(tiny_ckpt),
        "--target",
        "cpu",
        "--precision",
        "int4",
        "--out",
        str(out),
    ]
    rng = random.Random()
    killed = False
    for _ in range(3):  # kill at a random moment (retry if the build finished first)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(1.0, 3.5))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
            break
        proc.wait()
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    if killed and out.exists():
        # killed after the final rename: the bundle is whole
        assert verify_bundle(out).ok
    elif killed:
        from edgekit.errors import EdgekitError

        with pytest.raises(EdgekitError):
            verify_bundle(out)
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert _tree(out) == _tree(cpu_bundle)
    assert not out.with_name(out.name + ".partial").exists()


def test_orin_int4_gguf_bundle_and_engines_script(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "orin"
    assert (
        main(
            ["build", str(tiny_ckpt), "--target", "orin", "--precision", "int4", "--backend", "gguf", "--out", str(out)]
        )
        == 0
    )
    assert verify_bundle(out).ok
    m = json.loads((out / MANIFEST).read_text())
    assert m["target"]["gpu_arch"] == "sm_87" and m["parts"]["vision"]["precision"] == "fp16"
    script = (out / "build-engines.sh").read_text()
    assert 'EXPECTED_SM="87"' in script and "trtexec" in script and "--fp16" in script
    # on this machine (no GPU) the script refuses to build engines, with a clear message and its own exit code
    proc = subprocess.run(["bash", str(out / "build-engines.sh")], capture_output=True, text=True)
    assert proc.returncode == 3 and "build-engines.sh" in proc.stderr


def test_thor_nvfp4_builds_llama_cpps_fp4_and_records_it(tiny_ckpt, tmp_path):
    """With --backend gguf, Thor's nvfp4 is llama.cpp's GGUF NVFP4: every decoder matrix is NVFP4 and the manifest
    says so (the default backend, TensorRT, writes ModelOpt's NVFP4: tests/bundle/test_edgellm_export.py); MXFP4 has
    no TensorRT path and is refused in one line."""
    import gguf

    from edgekit.errors import EdgekitError
    from edgekit.quant.precisions import decoder_format

    out = tmp_path / "thor"
    assert (
        main(
            [
                "build",
                str(tiny_ckpt),
                "--target",
                "thor",
                "--precision",
                "nvfp4",
                "--backend",
                "gguf",
                "--method",
                "rtn",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert verify_bundle(out).ok
    m = json.loads((out / MANIFEST).read_text())
    assert m["target"]["backend"] == "gguf" and m["parts"]["decoder"]["precision"] == "nvfp4"
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out / m["parts"]["decoder"]["path"])).tensors}
    assert types["blk.0.ffn_down.weight"] == types["blk.0.attn_q.weight"] == "NVFP4"
    assert decoder_format("nvfp4", "tensorrt").name == "nvidia:nvfp4"
    with pytest.raises(EdgekitError, match="runs NVFP4"):
        decoder_format("mxfp4", "tensorrt")
