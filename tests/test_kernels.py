"""edgekit's CUDA attention kernels: built for sm_87/sm_90/sm_110 with zero spills, and their numerics checked on
the CPU by running the same .cu files through the emulation layer (kernels/emu/cuda_emu.h) against float64.

Inputs are fresh random draws (the seed is in the assertion message); the bar is ‖out − ref‖/‖ref‖ < 5e-3 for
f16 inputs with f32 accumulation, plus an elementwise check that names the first mismatching elements."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from edgekit.attention_kernels import (KernelLibrary, build_library, check_close, decode_attention_reference,
                                       relative_error, vit_window_attention_reference)

REL_TOL = 5e-3


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> KernelLibrary:
    if shutil.which("g++") is None or shutil.which("cmake") is None:
        pytest.fail("the kernel tests need g++ and cmake")
    return KernelLibrary(build_library(tmp_path_factory.mktemp("emu"), cuda=False))


@pytest.fixture
def rng():
    seed = int.from_bytes(os.urandom(4), "little")
    return seed, np.random.default_rng(seed)


def vision_rotary(grid_h: int, grid_w: int, head_dim: int = 80, theta: float = 10000.0):
    """Qwen2.5-ViT's 2-D rotary table for one image (row-major patches): half the frequencies for rows, half for columns."""
    dim = head_dim // 2
    inv = 1.0 / theta ** (np.arange(0, dim, 2) / dim)  # [dim/2]
    hh, ww = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    freqs = np.concatenate([hh.reshape(-1, 1) * inv, ww.reshape(-1, 1) * inv], axis=1)  # [T, dim]
    emb = np.concatenate([freqs, freqs], axis=1)  # [T, head_dim]
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def _vit_case(rng, windows: list[int], heads: int, scale: float = 1.0):
    T = sum(windows)
    qkv = (rng.standard_normal((T, 3, heads, 80)) * scale).astype(np.float16)
    side = int(np.ceil(np.sqrt(T)))
    cos, sin = vision_rotary(side, side)
    cu = np.concatenate([[0], np.cumsum(windows)]).astype(np.int32)
    return qkv, cos[:T], sin[:T], cu


@pytest.mark.parametrize("windows,heads", [
    ([64] * 4 + [37, 1, 18], 3),      # 112 px windows (64 patches), ragged tail, a single-token window; odd total
    ([333], 2),                        # full attention over one image: several query and key tiles, ragged last tile
    ([150, 150], 1),                   # full attention, two images in one call
])
def test_vit_window_attention_matches_float64(emu, rng, windows, heads):
    seed, g = rng
    qkv, cos, sin, cu = _vit_case(g, windows, heads, scale=2.0)
    out = emu.vit_window_attention(qkv, cos, sin, cu)
    ref = vit_window_attention_reference(qkv, cos, sin, cu)
    err = relative_error(out, ref)
    print(f"vit windows={windows} heads={heads}: rel err {err:.2e}")
    assert err < REL_TOL, f"seed {seed}: relative error {err:.3e}"
    check_close(out, ref, atol=2e-2 * np.abs(ref).max(), rtol=2e-2, name=f"vit seed {seed}")


def test_checker_catches_an_off_by_one_window_offset(emu, rng):
    """Planted bug: the kernel gets window offsets shifted by one token; the comparison must fail, naming elements."""
    seed, g = rng
    qkv, cos, sin, cu = _vit_case(g, [64, 64, 41], 2)
    shifted = cu.copy()
    shifted[1] += 1
    out = emu.vit_window_attention(qkv, cos, sin, shifted)
    ref = vit_window_attention_reference(qkv, cos, sin, cu)
    with pytest.raises(AssertionError, match="outside atol"):
        check_close(out, ref, atol=2e-2 * np.abs(ref).max(), rtol=2e-2, name="planted off-by-one")
    assert relative_error(out, ref) > REL_TOL


def _decode_case(rng, lens: list[int], q_heads: int, kv_heads: int, capacity: int, int8: bool):
    B, D = len(lens), 128
    q = rng.standard_normal((B, q_heads, D)).astype(np.float16)
    k = rng.standard_normal((B, kv_heads, D)).astype(np.float16)
    v = rng.standard_normal((B, kv_heads, D)).astype(np.float16)
    # M-RoPE for a text token: all three position ids equal, so the sections collapse to one 1-D table
    pos = np.array(lens, dtype=np.float64)[:, None]
    inv = 1.0 / 1e6 ** (np.arange(0, D, 2) / D)
    emb = np.concatenate([pos * inv, pos * inv], axis=1)
    cos, sin = np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)
    keys = rng.standard_normal((B, kv_heads, capacity, D)) * 1.5
    vals = rng.standard_normal((B, kv_heads, capacity, D))
    if not int8:
        return q, k, v, cos, sin, keys.astype(np.float16), vals.astype(np.float16), None, None
    sk = np.abs(keys).max(-1) / 127
    sv = np.abs(vals).max(-1) / 127
    ck = np.clip(np.rint(keys / sk[..., None]), -127, 127).astype(np.int8)
    cv = np.clip(np.rint(vals / sv[..., None]), -127, 127).astype(np.int8)
    return q, k, v, cos, sin, ck, cv, sk.astype(np.float32), sv.astype(np.float32)


@pytest.mark.parametrize("lens,q_heads,kv_heads,splits,int8", [
    ([200, 57], 8, 2, 3, False),     # GQA 4:1 (MiMo's ratio), two sequences of different lengths
    ([0], 4, 1, 4, False),           # first token: attention over itself alone; more splits than keys
    ([333, 1], 8, 2, 5, True),       # INT8 KV with per-token-per-head scales
    ([8191], 8, 2, 16, False),       # long context (8192 with the new token), split-K
    ([8191], 4, 1, 16, True),        # long context, INT8 KV
])
def test_decode_attention_matches_float64(emu, rng, lens, q_heads, kv_heads, splits, int8):
    seed, g = rng
    q, k, v, cos, sin, ck, cv, sk, sv = _decode_case(g, lens, q_heads, kv_heads, max(lens) + 8, int8)
    ref = decode_attention_reference(q, k, v, cos, sin, ck, cv, np.array(lens), sk, sv)
    out = emu.decode_attention(q, k, v, cos, sin, ck, cv, np.array(lens), splits, sk, sv)
    err = relative_error(out, ref)
    print(f"decode lens={lens} heads={q_heads}/{kv_heads} splits={splits} int8={int8}: rel err {err:.2e}")
    assert err < REL_TOL, f"seed {seed}: relative error {err:.3e}"
    check_close(out, ref, atol=2e-2 * np.abs(ref).max(), rtol=2e-2, name=f"decode seed {seed}")
    # the new token landed in the cache at seq_lens[b], rotated (and quantized for INT8)
    from edgekit.attention_kernels import apply_rotary

    for b, n in enumerate(lens):
        want = apply_rotary(k[b].astype(np.float64), cos[b].astype(np.float64), sin[b].astype(np.float64))
        got = ck[b, :, n].astype(np.float64) * (sk[b, :, n, None] if int8 else 1.0)
        tol = (sk[b, :, n, None] * 0.51) if int8 else 2e-3 * np.abs(want).max()
        assert np.all(np.abs(got - want) <= tol + 1e-6), f"seed {seed}: appended key differs"


def test_decode_split_count_does_not_change_the_answer(emu, rng):
    seed, g = rng
    case = _decode_case(g, [700], 8, 2, 708, False)
    outs = []
    for splits in (1, 2, 7):
        q, k, v, cos, sin, ck, cv, sk, sv = (x.copy() if x is not None else None for x in case)
        outs.append(emu.decode_attention(q, k, v, cos, sin, ck, cv, np.array([700]), splits, sk, sv).astype(np.float64))
    for o in outs[1:]:
        assert relative_error(o, outs[0]) < 1e-3, f"seed {seed}"


def test_decode_checker_catches_a_stale_length(emu, rng):
    """Planted bug: the kernel is told the cache holds one token less than it does."""
    seed, g = rng
    q, k, v, cos, sin, ck, cv, sk, sv = _decode_case(g, [90], 4, 1, 96, False)
    ref = decode_attention_reference(q, k, v, cos, sin, ck, cv, np.array([90]))
    out = emu.decode_attention(q, k, v, cos, sin, ck, cv, np.array([89]), 2)
    with pytest.raises(AssertionError, match="outside atol"):
        check_close(out, ref, atol=5e-3 * np.abs(ref).max(), rtol=5e-3, name="planted stale length")


@pytest.mark.slow
def test_cuda_build_for_orin_hopper_thor_has_no_spills(tmp_path):
    if shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"):
        pytest.fail("nvcc not found: the kernels must compile here for sm_87/sm_90/sm_110")
    lib = build_library(tmp_path / "cuda", cuda=True)
    assert lib.is_file()
    log = (tmp_path / "cuda" / "build.log").read_text()
    entries = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", log)
    archs = {arch for _, arch in entries}
    assert archs == {"sm_87", "sm_90", "sm_110"}, archs
    kernels = {name for name, _ in entries}
    assert any("vit_window_attention" in k for k in kernels) and any("decode_partial" in k for k in kernels)
    reports = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert len(reports) >= len(entries) and all(r == ("0", "0", "0") for r in reports), reports
    assert "warning" not in log.lower()


def test_torch_op_falls_back_to_the_reference_without_cuda(rng):
    import torch

    from edgekit.attention_kernels import register_torch_ops

    seed, g = rng
    qkv, cos, sin, cu = _vit_case(g, [64, 23, 1], 2)
    register_torch_ops()
    args = (torch.from_numpy(qkv.astype(np.float32)), torch.from_numpy(cos), torch.from_numpy(sin), torch.from_numpy(cu))
    out = torch.ops.edgekit.vit_window_attention(*args)
    ref = vit_window_attention_reference(qkv, cos, sin, cu)
    assert relative_error(out.numpy(), ref) < 1e-5, f"seed {seed}"
    torch.library.opcheck(torch.ops.edgekit.vit_window_attention.default, args)  # schema, fake tensor, autograd registration
