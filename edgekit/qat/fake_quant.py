"""Fake quantization on a format's own grid with straight-through gradients (pure numerics, no model plumbing).

The value a training step sees is computed by the grid's own `quantize`/`dequantize` on the params as the
format stores them (fp16 super-scales, 6-bit sub-scales, ...), so the file written from the trained state holds
exactly what training saw; gradients reach the trainables through a surrogate of the same expression whose value
is added as zero (`exact + (s - s.detach())`).

Trainables of one linear:
  u  [out, in]  latent weight offset in units of the init's grid step: W = W0 + step · u (Adam's per-element step
                is then a fraction of a grid step at any weight magnitude; on FP4's E2M1 levels the step is the
                scale, the levels' smallest gap; on FP8's E4M3 the gap at the init's code)
  t  per float-stored param (trainable_keys): log-multiplier, param = init · exp(t), projected to the stored precision;
                integer sub-scales keep the init's values (a 6-bit code moves in jumps no gradient sees), and so do
                FP4's scale bytes (E8M0, UE4M3): an FP4 linear trains its latent weights only
"""

from __future__ import annotations

import torch

from edgekit.quant.grids import Grid, Params, QuantizedWeight, get_grid


def trainable_keys(params: Params) -> tuple[str, ...]:
    """The params a format stores as floats (super-scales, group scales): QAT trains these; integer sub-scales and
    mins stay as the init chose them."""
    return tuple(k for k, v in params.items() if v.is_floating_point())


def project(grid: Grid, value: torch.Tensor, stored_dtype: torch.dtype) -> torch.Tensor:
    """A float param as the format can store it (detached, in its stored dtype)."""
    v = value.detach()
    if stored_dtype == torch.float16:
        return v.clamp(-65504.0, 65504.0).to(torch.float16)
    if grid.float16_scales:  # fp16-representable, positive (TensorRT casts scales to fp16)
        v = v.abs().clamp(6.2e-5, 65504.0).to(torch.float16).to(torch.float32)
    return v.to(stored_dtype)


def _surrogate(grid: Grid, w: torch.Tensor | None, p: Params, codes: torch.Tensor) -> torch.Tensor:
    """Differentiable stand-in of dequantize(codes, p) (its value is discarded). The scales see the codes as
    constants (d/ds = the code's value in scale units, as when the codes are frozen); a latent weight `w` passes
    straight through wherever it is inside the grid's range (past it the code no longer follows the weight). (LSQ's
    scale gradient, the rounding residual, is ~0 on a grid-aligned init and Adam would turn that noise into
    full-size steps.)"""
    scale, offset = grid.effective(p)
    k = codes.shape[1]
    s = grid._columns(scale, 0, k)
    o = grid._columns(offset, 0, k) if offset is not None else None
    y = grid.value_of(codes, s, o)  # s·q + o, or s·levels[q] (FP4)
    if w is not None:
        s0 = s.detach()
        x = (w.detach() - (0 if o is None else o.detach())) / torch.where(s0 == 0, torch.ones_like(s0), s0)
        inside = _within_range(grid, x)
        y = y + torch.where(inside, w - w.detach(), torch.zeros_like(w))
    return y


def _within_range(grid: Grid, x: torch.Tensor) -> torch.Tensor:
    """x in units of the scale: where rounding it still follows it (up to half a step past the outermost value)."""
    if grid.values is None:
        return (x >= grid.qmin - 0.5) & (x <= grid.qmax + 0.5)
    return x.abs() <= grid.values.reach


class FakeQuantLinear(torch.nn.Module):
    """One linear's weight under QAT: `weight()` is the fake-quantized weight (exact value, STE gradients)."""

    def __init__(self, grid_name: str, init: QuantizedWeight, w0: torch.Tensor | None = None):
        """`w0`: the latent weight to start from (phase 1, codes follow the weight); None: the init's codes stay
        fixed and only the float params train (phase 2; no float copy of the weight is held)."""
        super().__init__()
        self.grid = get_grid(grid_name)
        self.keys = tuple(k for k in trainable_keys(init.params) if k not in self.grid.tensor_wide)
        self.shape = tuple(init.shape)
        self.stored_keys = tuple(init.params)
        for k, v in init.params.items():  # the init's params, stored precision: buffers, so they follow .to(device)
            self.register_buffer(f"stored_{k}", v.clone(), persistent=False)
        self.t = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.zeros(init.params[k].shape)) for k in self.keys})
        self.train_weight = w0 is not None
        if self.train_weight:
            scale, _ = self.grid.effective(init.params)
            self.register_buffer("w0", w0.detach().to(torch.float32).clone())
            step = self.grid._columns(scale.abs(), 0, self.shape[1])
            if self.grid.values is not None:  # a float grid's gaps are its members' (value_sets.ValueSet.unit)
                step = step * self.grid.values.unit(init.codes.to(step.device))
            self.register_buffer("step", step.clone())
            self.u = torch.nn.Parameter(torch.zeros_like(self.w0))
        else:
            # every grid's codes fit a byte: signed integers int8, FP8's E4M3 bytes uint8
            self.register_buffer("codes", init.codes.to(torch.uint8 if self.grid.qmin >= 0 else torch.int8).clone())

    @property
    def stored(self) -> Params:
        return {k: getattr(self, f"stored_{k}") for k in self.stored_keys}

    def latent_params(self) -> Params:
        return {
            k: (self.stored[k].to(torch.float32) * torch.exp(self.t[k]) if k in self.keys else self.stored[k])
            for k in self.stored
        }

    def stored_params(self, latent: Params | None = None) -> Params:
        lat = self.latent_params() if latent is None else latent
        return {
            k: project(self.grid, lat[k], self.stored[k].dtype) if k in self.keys else self.stored[k]
            for k in self.stored
        }

    def latent_weight(self) -> torch.Tensor:
        return self.w0 + self.step * self.u

    def weight(self) -> torch.Tensor:
        lat = self.latent_params()
        stored = self.stored_params(lat)
        ste = {
            k: (lat[k] + (stored[k].to(torch.float32) - lat[k]).detach()) if k in self.keys else stored[k]
            for k in stored
        }
        w = self.latent_weight() if self.train_weight else None
        codes = self.grid.quantize(w.detach(), stored, 0) if self.train_weight else self.codes
        surrogate = _surrogate(self.grid, w, ste, codes)
        exact = self.grid.dequantize(codes, stored, 0)
        return exact + (surrogate - surrogate.detach())

    def export(self) -> QuantizedWeight:
        """Codes and params as the file stores them: what `weight()` computed, without any second rounding (in host
        memory, wherever training ran)."""
        stored = self.stored_params()
        codes = (
            self.grid.quantize(self.latent_weight().detach(), stored, 0)
            if self.train_weight
            else self.codes.to(torch.int16)
        )
        return QuantizedWeight(self.grid.name, self.shape, codes, stored).to_host()
