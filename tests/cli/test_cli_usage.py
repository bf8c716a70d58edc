"""Usage errors are typer's short usage message and exit 2, never a traceback (issue 12), run as a user runs
the CLI: the installed console script in a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EDGEKIT = shutil.which("edgekit", path=str(Path(sys.executable).parent)) or "edgekit"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["no-such-command"], "No such command 'no-such-command'"),
        (["biuld", "x"], "Did you mean 'build'?"),
        (["build", "--no-such-option", "x"], "No such option: --no-such-option"),
        (["build", "x", "--ou", "y"], "Possible options: --out"),
        (["build"], "Missing argument"),
        (["plan", "x", "--context", "abc"], "Invalid value for '--context'"),
        (["targets", "--jsn"], "No such option: --jsn"),
        (["doctor", "extra-argument"], "unexpected extra argument"),
    ],
)
def test_usage_error_is_short_usage_message_exit_2(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Usage: edgekit" in proc.stderr and needle.lower() in proc.stderr.lower(), proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 6


def test_help_exits_0_and_lists_doctor():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "doctor" in proc.stdout and "Traceback" not in proc.stderr


def test_the_cli_starts_without_the_heavy_libraries():
    """Every `edgekit` command imports the CLI first: torch, transformers, ONNX, ONNX Runtime and llama.cpp are
    imported by the commands that use them, never by the CLI itself (torch alone added 1.6 s to every command,
    its --help and its one-line errors included)."""
    heavy = ("torch", "transformers", "onnx", "onnxruntime", "llama_cpp", "gguf", "fastapi")
    probe = f"import sys, edgekit.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", (out.stdout, out.stderr[-2000:])
