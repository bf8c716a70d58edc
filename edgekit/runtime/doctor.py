"""`edgekit doctor`: what this machine can do for edgekit, one check a line, each with its fix.

A check is green (works), yellow (works, with a limit worth knowing: an optional part is missing, the
build is slower than it could be) or red (the default path is broken: `edgekit demo` would fail or crash).
Every probe is cheap and imports nothing heavy at module load.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

GREEN, YELLOW, RED = "green", "yellow", "red"
KERNEL_ARCHS = ("sm_87", "sm_90", "sm_110")  # what edgekit's CUDA kernels are built for
MIN_FREE_MEMORY_GB, MIN_FREE_DISK_GB = 4.0, 5.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    v = platform.python_version()
    ok = sys.version_info >= (3, 10)
    return Check("python", GREEN if ok else RED, f"{v} ({sys.executable})", "" if ok else "use Python 3.10 or newer")


def check_cpu(flags: set[str]) -> Check:
    from edgekit.runtime.llama_build import SIMD_LEVELS

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    simd = [name for name, flag in SIMD_LEVELS if flag in flags]
    amx = sorted(f for f in flags if f.startswith("amx"))
    detail = f"{model}; SIMD: {' '.join(simd) or 'none of AVX2/AVX-512'}" + (
        f"; AMX: {' '.join(amx)}" if amx else "; no AMX"
    )
    return Check("cpu", GREEN, detail)


def check_llama_cpp(flags: set[str], *, inspect_code: bool) -> list[Check]:
    from edgekit.runtime import llama_build as lb

    version = _version("llama_cpp_python")
    if version is None:
        return [Check("llama.cpp", RED, "llama-cpp-python is not installed", "bash scripts/install.sh")]
    try:
        features = lb.parse_system_info(lb.llama_system_info())
    except Exception as e:  # a broken shared library shows here first
        return [
            Check("llama.cpp", RED, f"llama-cpp-python {version} does not load: {e}", "bash scripts/build_llama_cpp.sh")
        ]
    xfd = lb.kernel_has_xfd()
    simd = " ".join(
        k for k in ("AVX2", "AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI", "NEON") if features.get(k) == "1"
    )
    checks = [
        Check(
            "llama.cpp",
            GREEN,
            f"llama-cpp-python {version}; CPU backend: {simd or 'no AVX2/AVX-512/NEON'}; "
            f"REPACK {'on' if features.get('REPACK') == '1' else 'off'}",
        )
    ]
    hazard = lb.amx_hazard(features, flags, xfd)
    if hazard:
        checks.append(Check("llama.cpp AMX", RED, hazard.split(";")[0], lb.REINSTALL_HINT))
    elif lb.build_has_amx(features):
        checks.append(
            Check(
                "llama.cpp AMX",
                YELLOW,
                "build has AMX, unused on this CPU/kernel; it dies with SIGILL on an AMX CPU under Linux 5.16+",
                lb.REINSTALL_HINT,
            )
        )
    else:
        checks.append(Check("llama.cpp AMX", GREEN, "AMX path not built (no SIGILL risk, llama.cpp PR #26954)"))
    missing = lb.missing_simd(features, flags)
    if missing:
        checks.append(
            Check(
                "llama.cpp SIMD",
                YELLOW,
                f"this CPU has {' '.join(missing)} but the build does not use it",
                "rebuild for this machine: bash scripts/build_llama_cpp.sh",
            )
        )
    if inspect_code:
        libs = lb.ggml_cpu_libraries()
        if not libs:
            checks.append(
                Check(
                    "llama.cpp code",
                    RED,
                    "no libggml-cpu library found in llama_cpp/lib",
                    "bash scripts/build_llama_cpp.sh",
                )
            )
        for lib in libs:
            try:
                found = lb.amx_instructions_in(lib)
            except Exception as e:
                checks.append(Check("llama.cpp code", YELLOW, f"{lib.name}: not inspected ({e})"))
                continue
            if found:
                counts = ", ".join(f"{k} x{v}" for k, v in sorted(found.items()))
                risky = xfd and any(f.startswith("amx") for f in flags)
                checks.append(
                    Check(
                        "llama.cpp code",
                        RED if risky else YELLOW,
                        f"{lib.name} contains AMX instructions ({counts})",
                        lb.REINSTALL_HINT,
                    )
                )
            else:
                checks.append(Check("llama.cpp code", GREEN, f"{lib.name}: no AMX instructions (objdump)"))
    return checks


def check_onnxruntime() -> Check:
    version = _version("onnxruntime")
    if version is None:
        return Check("onnxruntime", RED, "not installed", "pip install -c .ci/constraints.txt 'edgekit[onnx]'")
    import onnxruntime

    return Check("onnxruntime", GREEN, f"{version}; providers: {', '.join(onnxruntime.get_available_providers())}")


def check_packages() -> list[Check]:
    checks = []
    for dist, extra in (("torch", "torch"), ("transformers", "torch"), ("onnx", "onnx"), ("gguf", "gguf")):
        version = _version(dist)
        checks.append(
            Check(dist, GREEN, version)
            if version
            else Check(dist, RED, "not installed", f"pip install -c .ci/constraints.txt 'edgekit[{extra}]'")
        )
    return checks


def check_nvcc() -> Check:
    nvcc = shutil.which("nvcc") or next((str(p) for p in Path("/usr/local").glob("cuda*/bin/nvcc")), None)
    if nvcc is None:
        return Check(
            "nvcc",
            YELLOW,
            "not found: the CUDA kernels cannot be compiled here (bundles still build)",
            "install the CUDA toolkit (12.8+ for sm_110) to build edgekit's kernels",
        )
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
        archs = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("nvcc", YELLOW, f"{nvcc} does not run: {e}")
    release = re.search(r"release ([\d.]+)", out)
    have = [a for a in KERNEL_ARCHS if f"compute_{a[3:]}" in archs]
    lacking = [a for a in KERNEL_ARCHS if a not in have]
    detail = f"CUDA {release.group(1) if release else '?'} ({nvcc}); kernel targets: {' '.join(have) or 'none'}"
    if lacking:
        return Check("nvcc", YELLOW, detail + f"; cannot compile {' '.join(lacking)}", "use CUDA 12.8 or newer")
    return Check("nvcc", GREEN, detail)


def check_edgellm() -> Check:
    from edgekit.bundle.edgellm import find_exporter

    try:
        exe = find_exporter()
    except Exception as e:
        return Check("Edge-LLM exporter", YELLOW, str(e))
    if exe is None:
        return Check(
            "Edge-LLM exporter",
            YELLOW,
            "tensorrt-edgellm-export not found: TensorRT bundles get the unified checkpoint only",
            "bash scripts/setup_edgellm_venv.sh (or set EDGEKIT_EDGELLM_EXPORT)",
        )
    return Check("Edge-LLM exporter", GREEN, str(exe))


def check_targets() -> Check:
    from edgekit.targets import TARGETS_DIR, all_targets

    try:
        names = sorted(all_targets())
    except Exception as e:
        return Check("targets", RED, str(e), "reinstall edgekit: its wheel carries edgekit/targets/recipes/*.toml")
    return Check("targets", GREEN if names else RED, f"{len(names)} recipes in {TARGETS_DIR}")


def check_resources(path: Path) -> list[Check]:
    import psutil

    mem = psutil.virtual_memory().available / 2**30
    disk = shutil.disk_usage(path).free / 2**30
    return [
        Check(
            "memory",
            GREEN if mem >= MIN_FREE_MEMORY_GB else YELLOW,
            f"{mem:.1f} GiB available",
            "" if mem >= MIN_FREE_MEMORY_GB else "close other programs: calibration needs a few GiB",
        ),
        Check(
            "disk",
            GREEN if disk >= MIN_FREE_DISK_GB else YELLOW,
            f"{disk:.1f} GiB free in {path.resolve()}",
            "" if disk >= MIN_FREE_DISK_GB else "free disk space: a 7B bundle needs about 10 GB",
        ),
    ]


def run_checks(*, llama_only: bool = False, inspect_code: bool = True, cwd: Path = Path(".")) -> list[Check]:
    from edgekit.runtime.llama_build import cpu_flags

    flags = cpu_flags()
    checks = [check_cpu(flags), *check_llama_cpp(flags, inspect_code=inspect_code)]
    if llama_only:
        return checks
    return [
        check_python(),
        *checks,
        check_onnxruntime(),
        *check_packages(),
        check_nvcc(),
        check_edgellm(),
        check_targets(),
        *check_resources(cwd),
    ]


def healthy(checks: list[Check]) -> bool:
    return not any(c.status == RED for c in checks)


def as_json(checks: list[Check]) -> dict:
    return {"ok": healthy(checks), "checks": [asdict(c) for c in checks]}
