"""llama.cpp's own programs for the benchmarks: built by scripts/build_llama_tools.sh (pinned source, the installed
library's flags), and thin wrappers over the two that make quantization anchors (llama-imatrix, llama-quantize)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tools_dir() -> Path:
    """The folder holding llama-bench, llama-imatrix, llama-quantize, llama-perplexity (built once, ~6 minutes)."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "build_llama_tools.sh")], check=True, capture_output=True, text=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


def imatrix(model: Path, text: Path, out: Path, ctx: int = 256, threads: int | None = None) -> Path:
    """llama-imatrix over a text file in chunks of `ctx` tokens -> the importance matrix file."""
    subprocess.run(
        [
            str(tools_dir() / "llama-imatrix"),
            "-m",
            str(model),
            "-f",
            str(text),
            "-o",
            str(out),
            "-c",
            str(ctx),
            "-t",
            str(threads or os.cpu_count()),
            "--no-ppl",
            "--parse-special",
            "--no-escape",
            "--process-output",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


def quantize(src: Path, dst: Path, ftype: str, imatrix_file: Path | None = None, pure: bool = False) -> Path:
    """llama-quantize SRC DST FTYPE (e.g. Q4_K_M), with an importance matrix and --pure (every tensor FTYPE's base
    type) when asked."""
    cmd = [str(tools_dir() / "llama-quantize")]
    cmd += ["--imatrix", str(imatrix_file)] if imatrix_file else []
    cmd += ["--pure"] if pure else []
    subprocess.run(cmd + [str(src), str(dst), ftype, str(os.cpu_count())], check=True, capture_output=True, text=True)
    return dst
