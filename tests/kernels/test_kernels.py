"""edgekit's CUDA attention kernels: built for sm_87/sm_90/sm_110 with zero spills, and their numerics checked on
the CPU by running the same .cu files through the emulation layer (edgekit/kernels/emu/cuda_emu.h) against float64.

Inputs are fresh random draws (the seed is in the assertion message); the bar is ‖out − ref‖/‖ref‖ < 5e-3 for
f16 inputs with f32 accumulation, plus an elementwise check that names the first mismatching elements."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.metrics import relative_error
from edgekit.kernels.attention import KernelLibrary, build_library
from edgekit.kernels.reference import check_close, decode_attention_reference, vit_window_attention_reference
from edgekit.errors import EdgekitError
from edgekit.kernels.cases import DECODE_CASES, REL_TOL, VIT_CASES, check_decode, check_vit, decode_case, vit_case

KERNELS = Path(__file__).resolve().parents[2] / "edgekit" / "kernels"


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> KernelLibrary:
    if shutil.which("g++") is None or shutil.which("cmake") is None:
        pytest.fail("the kernel tests need g++ and cmake")
    return KernelLibrary(build_library(tmp_path_factory.mktemp("emu"), cuda=False))


@pytest.fixture
def rng(test_seed):
    return test_seed, np.random.default_rng(test_seed)


def ptx_fragment_coords(lane: int):
    """(row, col) of each element a lane holds for mma.m16n8k16 .f16 -> .f32, transcribed as the PTX ISA writes it
    ("Matrix Fragments for mma.m16n8k16 with floating point type"): a0..a7, b0..b3, c0..c3."""
    group, tig = lane >> 2, lane % 4
    a = [
        (group if (0 <= i < 2 or 4 <= i < 6) else group + 8, tig * 2 + (i & 1) + (8 if i >= 4 else 0)) for i in range(8)
    ]
    b = [(tig * 2 + (i & 1) + (8 if i >= 2 else 0), group) for i in range(4)]
    c = [(group if i < 2 else group + 8, tig * 2 + (i & 1)) for i in range(4)]
    return a, b, c


def test_emulated_mma_follows_the_ptx_fragment_layout(emu, rng):
    """The emulator's mma (which every kernel's register-level code goes through) against A@B+C, with the lanes'
    registers filled from the PTX table above: an independent transcription, so a layout slip in either fails."""
    seed, g = rng
    A = g.standard_normal((16, 16)).astype(np.float16)
    B = g.standard_normal((16, 8)).astype(np.float16)
    C = g.standard_normal((16, 8)).astype(np.float32)
    a_regs, b_regs, c_regs = np.zeros((32, 8), np.float16), np.zeros((32, 4), np.float16), np.zeros((32, 4), np.float32)
    seen_a, seen_b, seen_c = set(), set(), set()
    for lane in range(32):
        ca, cb, cc = ptx_fragment_coords(lane)
        a_regs[lane] = [A[rc] for rc in ca]
        b_regs[lane] = [B[rc] for rc in cb]
        c_regs[lane] = [C[rc] for rc in cc]
        seen_a.update(ca), seen_b.update(cb), seen_c.update(cc)
    assert len(seen_a) == 256 and len(seen_b) == 128 and len(seen_c) == 128  # each element held by exactly one lane
    d_regs = np.zeros((32, 4), np.float32)
    probe = emu.lib.edgekit_mma_probe
    probe.argtypes = [ctypes.c_void_p] * 5
    # element 2k of a lane's f16 row is the low half of its register k (little-endian): a plain uint32 view
    ptrs = [x.ctypes.data_as(ctypes.c_void_p) for x in (a_regs.view(np.uint32), b_regs.view(np.uint32), c_regs, d_regs)]
    assert probe(*ptrs, None) == 0
    D = np.zeros((16, 8))
    for lane in range(32):
        for i, rc in enumerate(ptx_fragment_coords(lane)[2]):
            D[rc] = d_regs[lane, i]
    ref = A.astype(np.float64) @ B.astype(np.float64) + C
    err = np.abs(D - ref).max()
    assert err <= 1e-5 * np.abs(ref).max(), f"seed {seed}: mma emulation differs from A@B+C by {err:.3g}"


@pytest.mark.parametrize("windows,heads,head_dim", VIT_CASES)
def test_vit_window_attention_matches_float64(emu, rng, windows, heads, head_dim):
    seed, g = rng
    err = check_vit(emu, g, windows, heads, head_dim, f"seed {seed}")
    print(f"vit windows={windows} heads={heads} head_dim={head_dim}: rel err {err:.2e}")


def test_vit_reads_only_the_first_half_of_the_rotary_table(emu, rng):
    """The documented contract: cos/sin are cat(freqs, freqs), and the kernel reads columns [0, D/2) only."""
    seed, g = rng
    qkv, cos, sin, cu = vit_case(g, [64, 45], 2)
    ref = vit_window_attention_reference(qkv, cos, sin, cu)
    cos_nan, sin_nan = cos.copy(), sin.copy()
    cos_nan[:, 40:] = np.nan
    sin_nan[:, 40:] = np.nan
    out = emu.vit_window_attention(qkv, cos_nan, sin_nan, cu)
    assert relative_error(out, ref) < REL_TOL, f"seed {seed}"


def test_vit_rejects_a_misaligned_buffer(emu, rng):
    """The kernel's 16-byte loads need aligned rows: a view 2 bytes into a buffer is an error code, not a fault."""
    _, g = rng
    qkv, cos, sin, cu = vit_case(g, [64, 3], 1)
    buf = np.zeros(qkv.size + 8, np.float16)
    shifted = buf[1 : 1 + qkv.size].reshape(qkv.shape)
    shifted[...] = qkv
    with pytest.raises(EdgekitError, match="returned 1"):
        emu.vit_window_attention(shifted, cos, sin, cu)


def test_checker_catches_an_off_by_one_window_offset(emu, rng):
    """Planted bug: the kernel gets window offsets shifted by one token; the comparison must fail, naming elements."""
    seed, g = rng
    qkv, cos, sin, cu = vit_case(g, [64, 64, 41], 2)
    shifted = cu.copy()
    shifted[1] += 1
    out = emu.vit_window_attention(qkv, cos, sin, shifted)
    ref = vit_window_attention_reference(qkv, cos, sin, cu)
    with pytest.raises(AssertionError, match="outside atol"):
        check_close(out, ref, atol=2e-2 * np.abs(ref).max(), rtol=2e-2, name="planted off-by-one")
    assert relative_error(out, ref) > REL_TOL


@pytest.mark.parametrize("lens,q_heads,kv_heads,splits,int8", DECODE_CASES)
def test_decode_attention_matches_float64(emu, rng, lens, q_heads, kv_heads, splits, int8):
    seed, g = rng
    err = check_decode(emu, g, lens, q_heads, kv_heads, splits, int8, f"seed {seed}")
    print(f"decode lens={lens} heads={q_heads}/{kv_heads} splits={splits} int8={int8}: rel err {err:.2e}")


def test_decode_split_count_does_not_change_the_answer(emu, rng):
    seed, g = rng
    case = decode_case(g, [700], 8, 2, 708, False)
    outs = []
    for splits in (1, 2, 7):
        q, k, v, cos, sin, ck, cv, sk, sv = (x.copy() if x is not None else None for x in case)
        outs.append(emu.decode_attention(q, k, v, cos, sin, ck, cv, np.array([700]), splits, sk, sv).astype(np.float64))
    for o in outs[1:]:
        assert relative_error(o, outs[0]) < 1e-3, f"seed {seed}"


def test_decode_checker_catches_a_stale_length(emu, rng):
    """Planted bug: the kernel is told the cache holds one token less than it does."""
    seed, g = rng
    for _ in range(50):  # a draw where dropping the last cached token is visible beyond the tolerance at all
        q, k, v, cos, sin, ck, cv, sk, sv = decode_case(g, [90], 4, 1, 96, False)
        ref = decode_attention_reference(q, k, v, cos, sin, ck, cv, np.array([90]))
        stale = decode_attention_reference(q, k, v, cos, sin, ck, cv, np.array([89]))
        atol = 5e-3 * np.abs(ref).max()
        if (np.abs(stale - ref) > 2 * (atol + 5e-3 * np.abs(ref))).any():
            break
    else:
        pytest.fail("no draw in 50 makes one cached token matter; the case is too weak to plant this bug in")
    out = emu.decode_attention(q, k, v, cos, sin, ck, cv, np.array([89]), 2)
    with pytest.raises(AssertionError, match="outside atol"):
        check_close(out, ref, atol=atol, rtol=5e-3, name="planted stale length")


def _nvcc() -> str:
    nvcc = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
    if nvcc is None:
        pytest.fail("nvcc not found: the kernels must compile here for sm_87/sm_90/sm_110")
    return nvcc


PTXAS_REPORT = re.compile(
    r"Compiling entry function '(\w+)' for '(sm_\d+)'\n.*\n\s*(\d+) bytes stack frame, (\d+) bytes "
    r"spill stores, (\d+) bytes spill loads\n.*Used (\d+) registers"
)


@pytest.mark.slow
def test_cuda_build_for_orin_hopper_thor_has_no_spills(tmp_path):
    _nvcc()
    lib = build_library(tmp_path / "cuda", cuda=True)
    assert lib.is_file()
    # one ptxas report per object (cmake/ptxas_guard.cmake), so the -j2 build cannot interleave them
    logs = sorted((tmp_path / "cuda").rglob("*.ptxas.txt"))
    assert {p.name.split(".")[0] for p in logs} == {"vit_window_attention", "decode_attention", "mma_probe"}, logs
    entries, reports = [], []
    for p in logs:
        text = p.read_text()
        entries += re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", text)
        reports += PTXAS_REPORT.findall(text)
    assert len(reports) == len(entries) > 0, "every compiled kernel has a ptxas resource report"
    by_arch: dict[str, set[str]] = {}
    for name, arch, stack, spill_st, spill_ld, regs in reports:
        short = re.sub(r"^_ZN7edgekit\d+", "", name).split("EEEv")[0].split("EPK")[0]
        print(
            f"{arch:7s} {short:34s} {regs:>4s} registers, stack {stack}, spill stores {spill_st}, spill loads {spill_ld}"
        )
        assert (stack, spill_st, spill_ld) == ("0", "0", "0"), f"{short} on {arch}: local memory or spills"
        by_arch.setdefault(arch, set()).add(short)
    assert set(by_arch) == {"sm_87", "sm_90", "sm_110"}, by_arch.keys()
    want = {
        "vit_window_attention_kernelILi80",
        "decode_partial_kernelILi4ELb0",
        "decode_partial_kernelILi4ELb1",
        "decode_append_kernelILb1",
        "decode_combine_kernel",
        "mma_probe_kernel",
    }
    for arch, names in by_arch.items():
        assert want <= names, (arch, want - names)
    assert "warning" not in (tmp_path / "cuda" / "build.log").read_text().lower()


PLANTED_SPILL = r"""
__global__ void __launch_bounds__(512, 3) planted_spill(const float4* in, float* out) {  // <= 42 registers
    float4 r[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) r[i] = in[threadIdx.x + i * 512];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
        for (int i = 0; i < 16; ++i) s += r[i].x * r[j].y + r[i].z * r[j].w;
    out[threadIdx.x] = s;
}
"""
PLANTED_LOCAL_ARRAY = r"""
__global__ void planted_local_array(const int* idx, float* out) {
    float a[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) a[i] = out[i * 32 + threadIdx.x];
    for (int i = 0; i < 32; ++i) a[idx[i] & 31] += 1.f;  // runtime indices: the array lives in local memory
    out[threadIdx.x] = a[idx[threadIdx.x] & 31];
}
"""


@pytest.mark.parametrize("source,kind", [(PLANTED_SPILL, "spill"), (PLANTED_LOCAL_ARRAY, "local array")])
@pytest.mark.parametrize("check", ["ptxas flags", "report guard"])
def test_build_checks_reject_spills_and_local_memory(tmp_path, source, kind, check):
    """Planted bugs for the build's two checks, each on its own: the ptxas flags CMakeLists.txt passes (spills and
    local memory become ptxas errors), and cmake/ptxas_guard.cmake parsing a plain -Xptxas -v report."""
    src = tmp_path / "planted.cu"
    src.write_text(source)
    compile_cmd = [_nvcc(), "-arch=sm_87", "-c", str(src), "-o", str(tmp_path / "planted.o")]
    if check == "ptxas flags":
        flags = re.search(r"-Xptxas=([^>\s]+)", (KERNELS / "CMakeLists.txt").read_text()).group(1)
        cmd, message = (
            compile_cmd + [f"-Xptxas={flags}"],
            ("Registers are spilled" if kind == "spill" else "Local memory used"),
        )
    else:
        cmd = ["cmake", "-P", str(KERNELS / "cmake" / "ptxas_guard.cmake"), "--", *compile_cmd, "-Xptxas=-v"]
        message = "local memory or register spills"
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "planted.o").exists() or check == "ptxas flags"


def test_report_guard_passes_a_clean_kernel(tmp_path):
    """The guard's other side: a kernel without spills compiles through it, and its report is kept."""
    src = tmp_path / "clean.cu"
    src.write_text("__global__ void clean(float* x) { x[threadIdx.x] *= 2.f; }\n")
    obj = tmp_path / "clean.o"
    r = subprocess.run(
        [
            "cmake",
            "-P",
            str(KERNELS / "cmake" / "ptxas_guard.cmake"),
            "--",
            _nvcc(),
            "-arch=sm_87",
            "-c",
            str(src),
            "-o",
            str(obj),
            "-Xptxas=-v",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert obj.exists() and "0 bytes spill stores" in (tmp_path / "clean.o.ptxas.txt").read_text()


def test_torch_op_falls_back_to_the_reference_without_cuda(rng):
    import torch

    from edgekit.kernels.attention import register_torch_ops

    seed, g = rng
    qkv, cos, sin, cu = vit_case(g, [64, 23, 1], 2)
    register_torch_ops()
    args = (
        torch.from_numpy(qkv.astype(np.float32)),
        torch.from_numpy(cos),
        torch.from_numpy(sin),
        torch.from_numpy(cu),
    )
    out = torch.ops.edgekit.vit_window_attention(*args)
    ref = vit_window_attention_reference(qkv, cos, sin, cu)
    assert relative_error(out.numpy(), ref) < 1e-5, f"seed {seed}"
    torch.library.opcheck(
        torch.ops.edgekit.vit_window_attention.default, args
    )  # schema, fake tensor, autograd registration


def test_torch_decode_op_falls_back_to_the_reference_and_writes_the_cache(rng):
    import torch

    from edgekit.kernels.attention import register_torch_ops
    from edgekit.kernels.reference import apply_rotary

    seed, g = rng
    lens = [37, 0, 129]
    q, k, v, cos, sin, ck, cv, _, _ = decode_case(g, lens, 8, 2, max(lens) + 3, False)
    ref = decode_attention_reference(q, k, v, cos, sin, ck, cv, np.array(lens))
    register_torch_ops()
    t = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731  (CPU: the fallback path)
    cache_k, cache_v = t(ck), t(cv)
    args = (
        t(q),
        t(k),
        t(v),
        torch.from_numpy(cos),
        torch.from_numpy(sin),
        cache_k,
        cache_v,
        torch.tensor(lens, dtype=torch.int32),
        4,
    )
    out = torch.ops.edgekit.decode_attention(*args)
    assert out.shape == q.shape and relative_error(out.numpy(), ref) < 1e-5, f"seed {seed}"
    rotated = apply_rotary(k.astype(np.float64), cos[:, None, :].astype(np.float64), sin[:, None, :].astype(np.float64))
    for b, n in enumerate(lens):
        assert np.allclose(cache_k[b, :, n].numpy(), rotated[b], atol=1e-5) and np.array_equal(
            cache_v[b, :, n].numpy(), v[b].astype(np.float32)
        )
        assert np.array_equal(
            cache_k[b, :, n + 1 :].numpy(), ck[b, :, n + 1 :].astype(np.float32)
        )  # nothing else written
    torch.library.opcheck(torch.ops.edgekit.decode_attention.default, args)  # declared mutations, fake tensor
