"""Code books of the float formats: what each code of a non-uniform grid means, in units of its scale.

An integer grid's code q means `scale * q + offset` (edgekit.quant.grids). A float format's codes stand for a fixed,
non-uniform set of values instead: E2M1's 16 (FP4: MXFP4, NVFP4) or E4M3's 254 finite ones (FP8). A `ValueSet` is
that set as the grid uses it: rounding to the nearest member under a scale, the value of a code, and how far past
the largest member rounding still follows its input (where QAT's straight-through gradient stops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from edgekit.quant import fp4, fp8


@dataclass(frozen=True)
class ValueSet:
    name: str
    # (x, scale), both [..., k] float32 -> codes int16 of the members nearest x / scale (a zero scale: code 0)
    nearest_code: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    # (codes, scale) -> float32 values, as the runtime computes them
    value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    reach: float  # the largest |x / scale| that still rounds to the outermost member
    # codes -> the gap (in scale units) a latent weight moves in under QAT: E2M1 its smallest gap everywhere; E4M3 the
    # gap at that code (its steps grow with the magnitude: an eighth of the power of two below it)
    unit: Callable[[torch.Tensor], torch.Tensor]


def _half_gap_past_top(levels: tuple[float, ...]) -> float:
    top = sorted({abs(v) for v in levels})
    return top[-1] + (top[-1] - top[-2]) / 2


def _ones(codes: torch.Tensor) -> torch.Tensor:
    return torch.ones(codes.shape, dtype=torch.float32, device=codes.device)


E2M1 = ValueSet("e2m1", fp4.nearest_code, fp4.level_value, _half_gap_past_top(fp4.LEVELS), _ones)  # doubled: 12 + 2
E4M3 = ValueSet("e4m3", fp8.nearest_code, fp8.level_value, fp8.REACH, fp8.gap_at)
