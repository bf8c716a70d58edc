"""Mixed precision: measure each linear group's sensitivity, then choose per-group types under a size budget.

Sensitivity of a group (q/k/v, o, gate/up or down of one layer) at a grid is its relative output error
‖X Wᵀ − X Q(W)ᵀ‖² / ‖X Wᵀ‖² on calibration inputs of the full-precision model, with Q round-to-nearest
on that grid: the noise-to-signal ratio the group injects into the residual stream. Measured once for
every candidate grid (one streamed pass over the layers), it drives `allocate`, a greedy knapsack that
spends the bit budget where it buys the largest error reduction per bit. The chosen grids then go to
calibration (GPTQ/AWQ/RTN per group) as `QuantConfig.grid_overrides`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from edgekit.errors import EdgekitError
from edgekit.quant.formats import Format, parse


def bits_per_weight(fmt: Format | str) -> float:
    """Storage bits per weight of a format, scales included (Format.bits_per_weight)."""
    return parse(fmt).bits_per_weight


@dataclass
class GroupSensitivity:
    key: str  # "model.layers.{i}.{group}"
    params: int  # weights in the group
    error: dict[str, float] = field(default_factory=dict)  # format name -> relative output error


def relative_group_error(X: torch.Tensor, weights: list[torch.Tensor], grid: Format | str) -> float:
    """‖X Wᵀ − X Q(W)ᵀ‖² / ‖X Wᵀ‖² summed over a group's linears, Q = round-to-nearest on `grid`."""
    from edgekit.quant.grids import dequantize_weight, fit_and_quantize

    num = den = 0.0
    for W in weights:
        ref = X @ W.T
        num += float(((ref - X @ dequantize_weight(fit_and_quantize(grid, W)).T) ** 2).sum())
        den += float((ref**2).sum())
    return num / max(den, 1e-30)


def allocate(groups: list[GroupSensitivity], budget_bits: float) -> dict[str, str]:
    """Per-group grid minimising the summed relative error with average bits per weight <= budget_bits.

    Greedy on the upgrade with the largest error reduction per extra bit (exact for convex error-vs-bits
    curves, the usual case). Every group starts on its cheapest candidate; a budget below that is refused.
    """
    if not groups:
        raise EdgekitError("no linear groups to allocate")
    total = sum(g.params for g in groups)
    ladder = {g.key: sorted(g.error, key=bits_per_weight) for g in groups}
    choice = {g.key: ladder[g.key][0] for g in groups}
    spent = sum(g.params * bits_per_weight(choice[g.key]) for g in groups)
    floor = spent / total
    if floor > budget_bits + 1e-9:
        raise EdgekitError(
            f"--budget-bits {budget_bits}: the cheapest candidates already need {floor:.3f} bits "
            f"per weight; raise the budget or add a smaller format"
        )
    by_key = {g.key: g for g in groups}
    while True:
        best, best_gain = None, 0.0
        for key, grid in choice.items():
            g, steps = by_key[key], ladder[key]
            i = steps.index(grid)
            for nxt in steps[i + 1 :]:  # any higher rung: skips a rung that buys nothing
                extra = g.params * (bits_per_weight(nxt) - bits_per_weight(grid))
                if (spent + extra) / total > budget_bits + 1e-9:
                    continue
                gain = (g.error[grid] - g.error[nxt]) * g.params / extra
                if gain > best_gain:
                    best, best_gain = (key, nxt, extra), gain
        if best is None:
            return choice
        key, nxt, extra = best
        choice[key] = nxt
        spent += extra


def average_bits(groups: list[GroupSensitivity], choice: dict[str, str]) -> float:
    return sum(g.params * bits_per_weight(choice[g.key]) for g in groups) / sum(g.params for g in groups)


def measure_sensitivity(
    ckpt_path: str | Path,
    formats: list[Format],
    samples: str = "default",
    n: int = 16,
    seed: int = 0,
    resize_to: tuple[int, int] = (224, 224),
    on_layer: Callable[[int, int], None] | None = None,
    device: torch.device | None = None,
) -> list[GroupSensitivity]:
    """One streamed pass of the full-precision model (a layer at a time on `device`): every group's error at every
    candidate grid."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.calibrate import AWQ_TOKENS
    from edgekit.quant.layer_stats import GROUPS, collect_stats
    from edgekit.quant.layers import calibration_sequences, decoder_layer, hf_config, layer0_inputs, rotary, run_layer

    formats = [parse(f) for f in formats]
    ck = open_checkpoint(ckpt_path)
    for fmt in formats:
        for i in range(ck.text.num_layers):
            for names in GROUPS.values():
                for nm in names:
                    fmt.grid.check_width(ck.shape(f"model.layers.{i}.{nm}.weight")[1])
    seqs, _ = calibration_sequences(Path(ckpt_path), samples, n, seed, resize_to)
    cfg = hf_config(Path(ckpt_path))
    device = device or torch.device("cpu")
    rope = rotary(cfg).to(device)
    hidden = layer0_inputs(ck, seqs, cfg, device)
    out = []
    for i in range(ck.text.num_layers):
        layer = decoder_layer(ck, cfg, i).to(device)
        stats = collect_stats(layer, rope, hidden, seqs, AWQ_TOKENS, seed + i)
        for group, names in GROUPS.items():
            Ws = [layer.get_submodule(nm).weight.detach().float() for nm in names]
            X = torch.cat(stats[group].sample)
            out.append(
                GroupSensitivity(
                    f"model.layers.{i}.{group}",
                    sum(W.numel() for W in Ws),
                    {f.name: relative_group_error(X, Ws, f) for f in formats},
                )
            )
        hidden = run_layer(layer, rope, hidden, seqs)  # full precision: sensitivity of each group alone
        del layer, stats
        ck.close()
        if on_layer:
            on_layer(i, ck.text.num_layers)
    return out


def linear_type_overrides(choice: dict[str, str]) -> dict[str, Format]:
    """Group choices (group key -> format name) -> Format per linear weight name (for write_decoder_gguf)."""
    from edgekit.quant.layer_stats import GROUPS

    out = {}
    for key, name in choice.items():
        prefix, group = key.rsplit(".", 1)
        for nm in GROUPS[group]:
            out[f"{prefix}.{nm}.weight"] = parse(name)
    return out


def fixed_edge_layers(num_layers: int, edge_layers: int) -> set[int]:
    """The first and last `edge_layers` layers (kept at a higher precision: they are the most sensitive in
    most LLMs, and the first one reads the raw image-token embeddings)."""
    if edge_layers < 0 or 2 * edge_layers > num_layers:
        raise EdgekitError(
            f"--edge-layers {edge_layers}: must be between 0 and {num_layers // 2} for {num_layers} layers"
        )
    return set(range(edge_layers)) | set(range(num_layers - edge_layers, num_layers))


def choose_grids(
    groups: list[GroupSensitivity],
    budget_bits: float | None,
    base_grid: str,
    edge: set[int] = frozenset(),
    edge_grid: str | None = None,
) -> dict[str, str]:
    """Group -> grid: edge layers pinned to `edge_grid`; the others by `allocate` under the budget (or `base_grid`)."""
    pinned = []
    for g in groups:
        layer = int(g.key.split(".")[2])
        if layer in edge and edge_grid:
            err = g.error.get(edge_grid, 0.0)
            pinned.append(GroupSensitivity(g.key, g.params, {edge_grid: err}))
        elif budget_bits is None:
            pinned.append(GroupSensitivity(g.key, g.params, {base_grid: g.error.get(base_grid, 0.0)}))
        else:
            pinned.append(g)
    if budget_bits is None:
        return {g.key: next(iter(g.error)) for g in pinned}
    return allocate(pinned, budget_bits)
