"""The installed llama.cpp build (issue 12): no AMX code, the machine's best other SIMD, a decode that cannot
take the test run down with it, and a runtime that refuses the known SIGILL combination before loading.

`EDGEKIT_LLAMA_PYTHON=/path/to/other/venv/bin/python` points the subprocess decode at another llama.cpp build
(for example an AMX-enabled one on an AMX machine) to show what a crash looks like.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import require

require("llama_cpp")

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.runtime import llama_build as lb  # noqa: E402

CRASH_MESSAGE = "llama.cpp died with {sig}: see README, Troubleshooting"

SAMPLE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)


# ---- pure parsers ------------------------------------------------------------------------------------


def test_parse_system_info_reads_every_feature():
    f = lb.parse_system_info(SAMPLE_INFO)
    assert f["AVX512_VNNI"] == "1" and f["AMX_INT8"] == "1" and f["REPACK"] == "1" and f["SSE3"] == "1"
    assert lb.build_has_amx(f)
    assert not lb.build_has_amx(lb.parse_system_info(SAMPLE_INFO.replace("AMX_INT8 = 1 | ", "")))


@pytest.mark.parametrize(
    "build_amx,cpu_amx,xfd,bad",
    [
        (True, True, True, True),  # the SIGILL combination
        (True, True, False, False),  # old kernel: ggml's AMX init fails, it falls back
        (True, False, True, False),  # AMD or older Intel: no AMX to run
        (False, True, True, False),  # edgekit's build
    ],
)
def test_amx_hazard_truth_table(build_amx, cpu_amx, xfd, bad):
    info = SAMPLE_INFO if build_amx else SAMPLE_INFO.replace("AMX_INT8 = 1 | ", "")
    flags = {"avx2", "avx512f"} | ({"amx_tile", "amx_int8", "amx_bf16"} if cpu_amx else set())
    hazard = lb.amx_hazard(lb.parse_system_info(info), flags, xfd)
    assert (hazard is not None) == bad
    if bad:
        assert "SIGILL" in hazard and "build_llama_cpp.sh" in hazard and "\n" not in hazard


def test_missing_simd_names_levels_the_build_leaves_out():
    features = lb.parse_system_info("CPU : AVX2 = 1 | FMA = 1 |")
    assert lb.missing_simd(features, {"avx2", "avx512f", "avx512_vnni"}) == ["AVX512", "AVX512_VNNI"]
    assert lb.missing_simd(features, {"avx2"}) == []


# ---- what this machine's build contains ------------------------------------------------------------


def test_installed_ggml_cpu_has_no_amx_instructions():
    libs = lb.ggml_cpu_libraries()
    assert libs, "no libggml-cpu*.so in llama_cpp/lib"
    for lib in libs:
        found = lb.amx_instructions_in(lib)
        assert not found, f"{lib.name} contains AMX instructions {found}: rebuild with scripts/build_llama_cpp.sh"


def test_system_info_lists_no_amx_and_the_machines_best_simd():
    info = lb.llama_system_info()
    features = lb.parse_system_info(info)
    assert not lb.build_has_amx(features), info
    flags = lb.cpu_flags()
    if "avx2" in flags:  # x86: the build must use what the CPU has, not a lowest common denominator
        assert features.get("AVX2") == "1", info
        assert lb.missing_simd(features, flags) == [], (info, sorted(f for f in flags if f.startswith("avx")))
    assert lb.LlamaBuild.detect().hazard is None


def test_runtime_refuses_known_sigill_combination_before_loading(monkeypatch, tmp_path):
    """The decoder checks the build before it touches the file: a missing GGUF is never even looked at."""
    from edgekit.runtime.llama_decoder import LlamaDecoder

    bad = lb.LlamaBuild(lb.parse_system_info(SAMPLE_INFO), frozenset({"avx2", "amx_tile", "amx_int8"}), True)
    monkeypatch.setattr(lb, "_CHECKED", False)
    monkeypatch.setattr(lb.LlamaBuild, "detect", classmethod(lambda cls: bad))
    gguf = tmp_path / "never-loaded.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(EdgekitError) as e:
        LlamaDecoder(gguf)
    assert "SIGILL" in e.value.message and "build_llama_cpp.sh" in e.value.message and e.value.exit_code == 1


# ---- a real decode in a child process -----------------------------------------------------------------

DECODE_CHILD = textwrap.dedent("""
    import sys, llama_cpp as L
    L.llama_backend_init()
    m = L.llama_model_load_from_file(sys.argv[1].encode(), L.llama_model_default_params())
    assert m, "load failed"
    p = L.llama_context_default_params(); p.n_ctx = 64; p.n_threads = p.n_threads_batch = 2
    c = L.llama_init_from_model(m, p)
    vocab = L.llama_model_get_vocab(m)
    tok = [1, 2, 3, 4, 5, 6, 7]
    for step in range(8):  # prefill, then greedy steps: the matmuls that crashed ran on worker threads
        arr = (L.llama_token * len(tok))(*tok)
        assert L.llama_decode(c, L.llama_batch_get_one(arr, len(tok))) == 0
        logits = L.llama_get_logits_ith(c, -1)
        n = L.llama_vocab_n_tokens(vocab)
        tok = [max(range(n), key=lambda i: logits[i])]
    print("decoded", tok[0])
""")


def run_decode_child(python: str, gguf) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", DECODE_CHILD, str(gguf)], capture_output=True, text=True, timeout=300)


def fail_if_killed(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        pytest.fail(CRASH_MESSAGE.format(sig=sig) + f" (stderr tail: {proc.stderr.strip()[-300:]!r})", pytrace=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_real_decode_in_a_subprocess_survives(tiny_ckpt, tmp_path):
    from edgekit.export.gguf import write_decoder_gguf

    gguf = write_decoder_gguf(tiny_ckpt, tmp_path / "q4k.gguf", "q4_k")  # q4_k takes REPACK, q8 paths too
    proc = run_decode_child(os.environ.get("EDGEKIT_LLAMA_PYTHON", sys.executable), gguf)
    fail_if_killed(proc)
    assert proc.stdout.startswith("decoded")


def test_a_child_killed_by_a_signal_is_reported_with_the_troubleshooting_message():
    """The reporting path itself: a child that really dies of SIGILL gives the issue's message, not a dead run."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"], capture_output=True, text=True
    )
    with pytest.raises(pytest.fail.Exception) as e:
        fail_if_killed(proc)
    assert "llama.cpp died with SIGILL: see README, Troubleshooting" in str(e.value)


def test_doctor_is_red_and_exits_1_on_the_sigill_combination(monkeypatch, capsys):
    import json

    from edgekit.cli import main

    monkeypatch.setattr(lb, "llama_system_info", lambda: SAMPLE_INFO)
    monkeypatch.setattr(
        lb, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"}
    )
    monkeypatch.setattr(lb, "kernel_has_xfd", lambda: True)
    assert main(["doctor", "--json", "--llama-only", "--no-objdump"]) == 1
    report = json.loads(capsys.readouterr().out)
    red = [c for c in report["checks"] if c["status"] == "red"]
    assert not report["ok"] and red and "SIGILL" in red[0]["detail"] and "build_llama_cpp.sh" in red[0]["fix"]


def test_doctor_on_this_machine_is_healthy(capsys):
    import json

    from edgekit.cli import main

    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], [c for c in report["checks"] if c["status"] == "red"]
    names = {c["name"] for c in report["checks"]}
    assert {"cpu", "llama.cpp", "llama.cpp AMX", "llama.cpp code", "onnxruntime", "torch", "nvcc", "disk"} <= names
