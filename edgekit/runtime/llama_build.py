"""What the installed llama.cpp build contains, and whether it is safe to run on this machine.

The known-bad combination (llama.cpp PR #26954, open): a ggml CPU backend compiled with AMX, an Intel CPU
that has AMX, and a Linux kernel that hands out AMX tile state on demand (XFD, Linux 5.16+). ggml asks the
kernel for the tile permission once, yet runs its AMX matmul on OpenMP worker threads too, and the first
`tilezero` there dies with SIGILL: the whole process, with no message. edgekit's install builds llama.cpp
without AMX (scripts/build_llama_cpp.sh); this module lets the runtime refuse a build that still has it
before any model is loaded, and lets `edgekit doctor` and the tests check what a build really contains.

Pure parsers (`parse_system_info`, `amx_hazard`) are separate from the probes that read the machine.
"""

from __future__ import annotations

import ctypes
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

# Instructions that only an AMX code path contains (tile config, load, zero, dot products).
AMX_MNEMONICS = (
    "ldtilecfg",
    "sttilecfg",
    "tilezero",
    "tileloadd",
    "tilestored",
    "tdpbssd",
    "tdpbsud",
    "tdpbusd",
    "tdpbuud",
    "tdpbf16ps",
    "tilerelease",
)
# /proc/cpuinfo flag names of the SIMD levels ggml can use, best last.
SIMD_LEVELS = (
    ("AVX2", "avx2"),
    ("AVX512", "avx512f"),
    ("AVX512_VNNI", "avx512_vnni"),
    ("AVX512_BF16", "avx512_bf16"),
    ("AVX_VNNI", "avx_vnni"),
)
REINSTALL_HINT = "reinstall llama.cpp without AMX: `bash scripts/build_llama_cpp.sh` (README, Troubleshooting)"

_ARCH_GET_XCOMP_SUPP = 0x1021  # arch_prctl: which extended states the kernel can hand out
_XFEATURE_XTILEDATA = 18
_SYS_ARCH_PRCTL_X86_64 = 158


def parse_system_info(text: str) -> dict[str, str]:
    """`llama_print_system_info()` -> {"AVX2": "1", "AMX_INT8": "1", ...} for the CPU backend's features.

    The text is `CPU : SSE3 = 1 | AVX2 = 1 | ... |` (other backends add their own ` : ` sections)."""
    features: dict[str, str] = {}
    for item in re.split(r"\s*\|\s*", text):
        m = re.fullmatch(r"(?:[^:]*:\s*)?([A-Za-z0-9_]+)\s*=\s*(\S+)", item.strip())
        if m:
            features[m.group(1).upper()] = m.group(2)
    return features


def build_has_amx(features: dict[str, str]) -> bool:
    return any(k.startswith("AMX") and v not in ("0", "") for k, v in features.items())


def amx_hazard(features: dict[str, str], cpu_flags: set[str], kernel_xfd: bool) -> str | None:
    """Why this build would die with SIGILL here, or None when it cannot."""
    if not build_has_amx(features):
        return None
    cpu_amx = sorted(f for f in cpu_flags if f.startswith("amx"))
    if not cpu_amx or not kernel_xfd:
        return None  # ggml's AMX init fails and it falls back to its other kernels
    return (
        f"this llama.cpp build uses AMX ({', '.join(k for k in sorted(features) if k.startswith('AMX'))}) and this "
        f"CPU has it ({' '.join(cpu_amx)}) under a kernel with XFD: llama.cpp would die with SIGILL "
        f"(upstream PR #26954); {REINSTALL_HINT}"
    )


def missing_simd(features: dict[str, str], cpu_flags: set[str]) -> list[str]:
    """SIMD levels this CPU has that the build does not use (a build made for another machine)."""
    return [name for name, flag in SIMD_LEVELS if flag in cpu_flags and features.get(name) != "1"]


# ---- probes of this machine ------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_has_xfd() -> bool:
    """True when the Linux kernel can hand out AMX tile data on request (arch_prctl ARCH_GET_XCOMP_SUPP)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        mask = ctypes.c_uint64(0)
        rc = libc.syscall(_SYS_ARCH_PRCTL_X86_64, _ARCH_GET_XCOMP_SUPP, ctypes.byref(mask))
    except (OSError, AttributeError):
        return False
    return rc == 0 and bool(mask.value >> _XFEATURE_XTILEDATA & 1)


def llama_system_info() -> str:
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def ggml_cpu_libraries() -> list[Path]:
    """The CPU backend libraries llama-cpp-python installed, one per distinct content (the wheel holds
    libggml-cpu.so, .so.0 and .so.0.x.y as three copies of one file)."""
    import hashlib

    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
    unique: dict[str, Path] = {}
    for path in sorted(lib_dir.glob("libggml-cpu*.so*")) + sorted(lib_dir.glob("ggml-cpu*.dll")):
        unique.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return list(unique.values())


def amx_instructions_in(library: Path) -> dict[str, int]:
    """Count AMX instructions in a shared library's code (objdump -d). Raises if objdump is missing."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise EdgekitError("objdump not found: install binutils to inspect the llama.cpp build")
    counts = dict.fromkeys(AMX_MNEMONICS, 0)
    pattern = re.compile(r"\t(" + "|".join(AMX_MNEMONICS) + r")\b")
    with subprocess.Popen(
        [objdump, "-d", "--no-show-raw-insn", str(library)], stdout=subprocess.PIPE, text=True, errors="replace"
    ) as proc:
        for line in proc.stdout:
            m = pattern.search(line)
            if m:
                counts[m.group(1)] += 1
    return {k: v for k, v in counts.items() if v}


@dataclass(frozen=True)
class LlamaBuild:
    features: dict[str, str]
    cpu_flags: frozenset[str]
    kernel_xfd: bool

    @classmethod
    def detect(cls) -> "LlamaBuild":
        return cls(parse_system_info(llama_system_info()), frozenset(cpu_flags()), kernel_has_xfd())

    @property
    def hazard(self) -> str | None:
        return amx_hazard(self.features, set(self.cpu_flags), self.kernel_xfd)


_CHECKED = False


def ensure_llama_safe() -> None:
    """Refuse, with one line, to load a model into a llama.cpp build that would crash this process."""
    global _CHECKED
    if _CHECKED:
        return
    hazard = LlamaBuild.detect().hazard
    if hazard:
        raise EdgekitError(hazard, exit_code=1)
    _CHECKED = True
