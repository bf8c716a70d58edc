"""edgekit's fused attention kernels (edgekit/kernels/*.cu) from Python: the C library through ctypes (the CUDA build
on a GPU, or the CPU emulation build that runs the same .cu files), and torch ops. The float64 references they are
tested against are edgekit.kernels.reference.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

KERNELS_DIR = Path(__file__).resolve().parent  # package data: the .cu sources ship in the wheel
KV_F16, KV_INT8 = 0, 1


# ---- the C library ---------------------------------------------------------------------------------


def build_library(build_dir: Path, cuda: bool, cuda_archs: str | None = None) -> Path:
    """cmake-build edgekit/kernels/ into build_dir: the CUDA library (sm_87/90/110, or `cuda_archs` such as "90-real"
    for the GPU at hand; spills fail the build) or the CPU emulation library. Returns the .so path; raises
    EdgekitError with the build log's tail on failure."""
    build_dir.mkdir(parents=True, exist_ok=True)
    flags = ["-DEDGEKIT_CUDA=ON", "-DEDGEKIT_EMU=OFF"] if cuda else ["-DEDGEKIT_CUDA=OFF", "-DEDGEKIT_EMU=ON"]
    if cuda and cuda_archs:
        flags.append(f"-DEDGEKIT_CUDA_ARCHS={cuda_archs}")
    log = build_dir / "build.log"
    with open(log, "w") as f:
        for cmd in (
            ["cmake", "-S", str(KERNELS_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *flags],
            ["cmake", "--build", str(build_dir), "-j2"],
        ):
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                raise EdgekitError(f"kernel build failed ({' '.join(cmd[:2])}): " + " | ".join(tail))
    name = "libedgekit_kernels.so" if cuda else "emu/libedgekit_kernels_emu.so"
    return build_dir / name


class KernelLibrary:
    """ctypes binding of edgekit_kernels.h over numpy arrays. With the emulation library 'device' pointers are the
    numpy buffers themselves; with the CUDA library (`gpu=True`) each array is copied to the GPU (through torch),
    the kernel runs on the default stream, and what it writes (outputs, appended caches) is copied back."""

    def __init__(self, path: Path, gpu: bool = False):
        self.lib = ctypes.CDLL(str(path))
        self.gpu = gpu
        p, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        self.lib.edgekit_vit_window_attention.argtypes = [p, p, p, p, i, i, i, i, p, p]
        self.lib.edgekit_vit_window_attention.restype = i
        self.lib.edgekit_decode_workspace_bytes.argtypes = [i, i, i]
        self.lib.edgekit_decode_workspace_bytes.restype = sz
        self.lib.edgekit_decode_attention.argtypes = [p, p, p, p, p, p, p, p, p, i, p, i, i, i, i, i, p, p, p]
        self.lib.edgekit_decode_attention.restype = i

    def _buffers(self, arrays: dict[str, np.ndarray | None]) -> tuple[dict, dict]:
        """(pointers, device copies) for named C-contiguous arrays (None stays a null pointer)."""
        ptrs, copies = {}, {}
        for name, a in arrays.items():
            if a is None:
                ptrs[name] = None
                continue
            assert a.flags.c_contiguous, name
            if self.gpu:
                import torch

                copies[name] = torch.from_numpy(a).to("cuda")
                ptrs[name] = ctypes.c_void_p(copies[name].data_ptr())
            else:
                ptrs[name] = a.ctypes.data_as(ctypes.c_void_p)
        return ptrs, copies

    def _written(self, copies: dict, arrays: dict[str, np.ndarray | None]) -> None:
        """Copy what the kernel wrote on the GPU back into the host arrays."""
        if not self.gpu:
            return
        import torch

        torch.cuda.synchronize()
        for name, a in arrays.items():
            if a is not None:
                a[...] = copies[name].cpu().numpy()

    def vit_window_attention(
        self, qkv: np.ndarray, cos: np.ndarray, sin: np.ndarray, cu_windows: np.ndarray
    ) -> np.ndarray:
        T, three, H, D = qkv.shape
        qkv = np.ascontiguousarray(qkv, dtype=np.float16)
        cos, sin = np.ascontiguousarray(cos, dtype=np.float32), np.ascontiguousarray(sin, dtype=np.float32)
        cu = np.ascontiguousarray(cu_windows, dtype=np.int32)
        out = np.zeros((T, H * D), dtype=np.float16)
        max_len = int(np.max(np.diff(cu)))
        ptr, dev = self._buffers({"qkv": qkv, "cos": cos, "sin": sin, "cu": cu, "out": out})
        rc = self.lib.edgekit_vit_window_attention(
            ptr["qkv"], ptr["cos"], ptr["sin"], ptr["cu"], len(cu) - 1, max_len, H, D, ptr["out"], None
        )
        if rc != 0:
            raise EdgekitError(f"edgekit_vit_window_attention returned {rc}")
        self._written(dev, {"out": out})
        return out

    def decode_attention(
        self, q_new, k_new, v_new, cos, sin, cache_k, cache_v, seq_lens, num_splits: int, scale_k=None, scale_v=None
    ) -> np.ndarray:
        """Runs one step; appends into cache_k/cache_v (and scales) in place, like the device would."""
        B, Hq, D = q_new.shape
        Hkv, C = cache_k.shape[1], cache_k.shape[2]
        int8 = cache_k.dtype == np.int8
        q, k, v = (np.ascontiguousarray(x, dtype=np.float16) for x in (q_new, k_new, v_new))
        cos, sin = np.ascontiguousarray(cos, dtype=np.float32), np.ascontiguousarray(sin, dtype=np.float32)
        lens = np.ascontiguousarray(seq_lens, dtype=np.int32)
        ws = np.zeros(self.lib.edgekit_decode_workspace_bytes(B, Hq, num_splits) // 4, dtype=np.float32)
        out = np.zeros((B, Hq, D), dtype=np.float16)
        written = {"cache_k": cache_k, "cache_v": cache_v, "scale_k": scale_k, "scale_v": scale_v, "out": out}
        ptr, dev = self._buffers({"q": q, "k": k, "v": v, "cos": cos, "sin": sin, "lens": lens, "ws": ws, **written})
        rc = self.lib.edgekit_decode_attention(
            ptr["q"],
            ptr["k"],
            ptr["v"],
            ptr["cos"],
            ptr["sin"],
            ptr["cache_k"],
            ptr["cache_v"],
            ptr["scale_k"],
            ptr["scale_v"],
            KV_INT8 if int8 else KV_F16,
            ptr["lens"],
            B,
            Hq,
            Hkv,
            C,
            num_splits,
            ptr["ws"],
            ptr["out"],
            None,
        )
        if rc != 0:
            raise EdgekitError(f"edgekit_decode_attention returned {rc}")
        self._written(dev, written)
        return out


# ---- torch ops -------------------------------------------------------------------------------------

_CUDA_LIB: KernelLibrary | None = None


def cuda_library() -> KernelLibrary | None:
    """The CUDA build ($EDGEKIT_KERNELS_LIB, else edgekit/kernels/build/libedgekit_kernels.so), loaded once; None if absent."""
    import os

    global _CUDA_LIB
    if _CUDA_LIB is None:
        path = Path(os.environ.get("EDGEKIT_KERNELS_LIB", KERNELS_DIR / "build" / "libedgekit_kernels.so"))
        if path.is_file():
            _CUDA_LIB = KernelLibrary(path)
    return _CUDA_LIB


def vit_window_attention_torch(qkv, cos, sin, cu_windows):
    """The reference in torch (f32 math, rotary in f32 as transformers does): the CPU / no-library fallback."""
    import torch

    T, _, H, D = qkv.shape
    x = qkv.float()
    c, s = cos.float()[:, None, :], sin.float()[:, None, :]
    rot = lambda t: torch.cat([-t[..., D // 2 :], t[..., : D // 2]], dim=-1)  # noqa: E731
    q, k, v = x[:, 0] * c + rot(x[:, 0]) * s, x[:, 1] * c + rot(x[:, 1]) * s, x[:, 2]
    out = torch.empty(T, H, D, dtype=torch.float32, device=qkv.device)
    bounds = cu_windows.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        att = torch.softmax(torch.einsum("qhd,khd->hqk", q[a:b], k[a:b]) / D**0.5, dim=-1)
        out[a:b] = torch.einsum("hqk,khd->qhd", att, v[a:b])
    return out.reshape(T, H * D).to(qkv.dtype)


def decode_attention_torch(q_new, k_new, v_new, cos, sin, cache_k, cache_v, seq_lens):
    """The decode step in torch (f32 math): rotary on the new q/k, k/v written into the caches at seq_lens[b]
    (in place, in the caches' dtype), GQA attention over seq_lens[b] + 1 tokens. The no-library fallback."""
    import torch

    B, Hq, D = q_new.shape
    Hkv = k_new.shape[1]
    c, s = cos.float()[:, None, :], sin.float()[:, None, :]
    rot = lambda t: torch.cat([-t[..., D // 2 :], t[..., : D // 2]], dim=-1)  # noqa: E731
    q = q_new.float() * c + rot(q_new.float()) * s
    k = k_new.float() * c + rot(k_new.float()) * s
    out = torch.empty(B, Hq, D, dtype=torch.float32, device=q_new.device)
    for b, n in enumerate(seq_lens.tolist()):
        cache_k[b, :, n] = k[b].to(cache_k.dtype)
        cache_v[b, :, n] = v_new[b].to(cache_v.dtype)
        keys, vals = cache_k[b, :, : n + 1].float(), cache_v[b, :, : n + 1].float()  # [Hkv, n+1, D]
        att = torch.softmax(q[b].view(Hkv, Hq // Hkv, D) @ keys.transpose(1, 2) / D**0.5, dim=-1)
        out[b] = (att @ vals).reshape(Hq, D)
    return out.to(q_new.dtype)


def register_torch_ops() -> None:
    """torch.ops.edgekit.vit_window_attention and torch.ops.edgekit.decode_attention (f16 KV cache, written in
    place): the fused CUDA kernels for f16 CUDA tensors when the library is built, the torch references
    otherwise. Opt-in: nothing in edgekit's ONNX export path calls them. (The INT8 KV cache is reached
    through the C API, edgekit_kernels.h.)"""
    import torch

    if hasattr(torch.ops, "edgekit") and hasattr(torch.ops.edgekit, "decode_attention"):
        return

    # explicit schema: this module's annotations are strings (from __future__ import annotations)
    @torch.library.custom_op(
        "edgekit::vit_window_attention",
        mutates_args=(),
        schema="(Tensor qkv, Tensor cos, Tensor sin, Tensor cu_windows) -> Tensor",
    )
    def vit_window_attention(qkv, cos, sin, cu_windows):
        lib = cuda_library() if qkv.is_cuda and qkv.dtype == torch.float16 else None
        if lib is None:
            return vit_window_attention_torch(qkv, cos, sin, cu_windows)
        T, _, H, D = qkv.shape
        out = torch.empty(T, H * D, dtype=torch.float16, device=qkv.device)
        cu = cu_windows.to(torch.int32).contiguous()
        max_len = int((cu[1:] - cu[:-1]).max())
        keep = [qkv.contiguous(), cos.float().contiguous(), sin.float().contiguous()]  # alive until queued
        rc = lib.lib.edgekit_vit_window_attention(
            keep[0].data_ptr(),
            keep[1].data_ptr(),
            keep[2].data_ptr(),
            cu.data_ptr(),
            cu.numel() - 1,
            max_len,
            H,
            D,
            out.data_ptr(),
            torch.cuda.current_stream().cuda_stream,
        )
        if rc != 0:
            raise RuntimeError(f"edgekit_vit_window_attention returned {rc}")
        return out

    @vit_window_attention.register_fake
    def _(qkv, cos, sin, cu_windows):
        T, _, H, D = qkv.shape
        return qkv.new_empty(T, H * D)

    @torch.library.custom_op(
        "edgekit::decode_attention",
        mutates_args=("cache_k", "cache_v"),
        schema="(Tensor q_new, Tensor k_new, Tensor v_new, Tensor cos, Tensor sin, "
        "Tensor(a!) cache_k, Tensor(b!) cache_v, Tensor seq_lens, int num_splits) -> Tensor",
    )
    def decode_attention(q_new, k_new, v_new, cos, sin, cache_k, cache_v, seq_lens, num_splits):
        f16 = all(t.dtype == torch.float16 for t in (q_new, k_new, v_new, cache_k, cache_v))
        lib = cuda_library() if q_new.is_cuda and f16 and cache_k.is_contiguous() and cache_v.is_contiguous() else None
        if lib is None:
            return decode_attention_torch(q_new, k_new, v_new, cos, sin, cache_k, cache_v, seq_lens)
        B, Hq, D = q_new.shape
        Hkv, C = cache_k.shape[1], cache_k.shape[2]
        keep = [t.contiguous() for t in (q_new, k_new, v_new)] + [
            cos.float().contiguous(),
            sin.float().contiguous(),
            seq_lens.to(torch.int32).contiguous(),
        ]
        ws = torch.empty(
            lib.lib.edgekit_decode_workspace_bytes(B, Hq, num_splits), dtype=torch.uint8, device=q_new.device
        )
        out = torch.empty(B, Hq, D, dtype=torch.float16, device=q_new.device)
        q, k, v, c, s, lens = (t.data_ptr() for t in keep)  # `keep` holds the temporaries until the launch is queued
        rc = lib.lib.edgekit_decode_attention(
            q,
            k,
            v,
            c,
            s,
            cache_k.data_ptr(),
            cache_v.data_ptr(),
            None,
            None,
            KV_F16,
            lens,
            B,
            Hq,
            Hkv,
            C,
            num_splits,
            ws.data_ptr(),
            out.data_ptr(),
            torch.cuda.current_stream().cuda_stream,
        )
        if rc != 0:
            raise RuntimeError(f"edgekit_decode_attention returned {rc}")
        return out

    @decode_attention.register_fake
    def _(q_new, k_new, v_new, cos, sin, cache_k, cache_v, seq_lens, num_splits):
        return q_new.new_empty(q_new.shape)
