"""Where torch work runs (`--device auto|cpu|cuda[:N]`): parsed and checked once, for every command.

CUDA is never required: `torch.cuda` is only asked whether a GPU is there (CPU-only torch answers no), and nothing
CUDA-specific is imported at module load. Nor is torch itself: the CLI's command modules import DEVICE_HELP, and torch
at their import cost every `edgekit` command 1.6 s before it could even print its help or an error. Weights and
hidden states live on the host; work moves to the device a layer at a time (`to_device`) and results come back
(`to_host`), so on the CPU both are no-ops and the CPU path is exactly the code that ran before devices existed.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = (
    "Where calibration, QAT and the torch reference run: auto (a CUDA GPU when there is one, else the CPU), "
    "cpu, cuda or cuda:N. Layers move to the GPU one at a time, so a 7B calibrates within a 24 GB card."
)
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a torch.device that exists here; one-line EdgekitError otherwise."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    text = (spec or "auto").strip().lower()
    m = _SPEC.match(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise EdgekitError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if kind == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        raise EdgekitError(
            f"--device {text}: no CUDA GPU here (torch {torch.__version__}, CUDA "
            f"{torch.version.cuda or 'not built in'}); use --device cpu or auto"
        )
    n = torch.cuda.device_count()
    i = int(index or 0)
    if i >= n:
        raise EdgekitError(f"--device {text}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    return torch.device("cuda", i)


def describe(device: torch.device) -> str:
    """'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)': what reports and logs record."""
    if device.type != "cuda":
        return device.type
    import torch

    return f"{device} ({torch.cuda.get_device_name(device)})"


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t if t.device == device else t.to(device, non_blocking=False)


def to_host(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type == "cpu" else t.cpu()
