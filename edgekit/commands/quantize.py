"""Commands: calibrate and quantize the decoder on embodied/driving samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli_app import app, console, err_console, progress

PRECISION_GRIDS = {"int4": "gguf:q4_k", "int8": "int8:channel"}


def _run(model: Path, method: str, grid: str, samples: str, n: int, damp: float, act_order: bool, alpha: float,
         cache: Path, seed: int, overrides: tuple = ()):
    from edgekit.quant.calibrate import QuantConfig, calibrate

    cfg = QuantConfig(method=method, grid=grid, samples=samples, n_samples=n, damp=damp, act_order=act_order,
                      alpha=alpha, seed=seed, grid_overrides=tuple(overrides))
    with progress() as bar:
        task = bar.add_task(f"{method} on {grid}", total=None)

        def on_layer(i, total, status):
            bar.update(task, total=total, completed=i + 1, description=f"{method} on {grid}: layer {i} {status}")

        return cfg, calibrate(model, cfg, cache, on_layer=on_layer)


def _mixed_grids(model: Path, grid: str, candidates: str, budget: float | None, edge_layers: int, edge_format: str,
                 samples: str, n: int) -> tuple[tuple, dict]:
    """Measure sensitivity, choose a grid per linear group; returns (overrides, report)."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.mixed import average_bits, choose_grids, fixed_edge_layers, measure_sensitivity

    grids = sorted({grid, edge_format, *(c.strip() for c in candidates.split(",") if c.strip())})
    edge = fixed_edge_layers(open_checkpoint(model).text.num_layers, edge_layers)
    with progress() as bar:
        task = bar.add_task("sensitivity", total=None)
        groups = measure_sensitivity(model, grids, samples, min(n, 16),
                                     on_layer=lambda i, t: bar.update(task, total=t, completed=i + 1))
    choice = choose_grids(groups, budget, grid, edge, edge_format if edge_layers else None)
    avg = average_bits(groups, choice)
    counts = {g: sum(1 for v in choice.values() if v == g) for g in sorted(set(choice.values()))}
    console.print(f"mixed precision: {avg:.3f} bits/weight over the decoder linears; groups per format {counts}")
    report = {"budget_bits": budget, "average_bits": avg, "edge_layers": edge_layers, "choice": dict(sorted(choice.items())),
              "sensitivity": {g.key: g.error for g in groups}}
    return tuple(sorted((k, v) for k, v in choice.items() if v != grid)), report


@app.command("calibrate")
def calibrate_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    samples: Annotated[str, typer.Option(help="driving,embodied (built-in) or JSONL files, comma-separated.")] = "driving,embodied",
    n: Annotated[int, typer.Option("--n", help="Calibration samples (split 'calib').")] = 128,
    method: Annotated[str, typer.Option(help="rtn | gptq | awq | smoothquant.")] = "gptq",
    format: Annotated[str, typer.Option("--format", help="Target grid: gguf:q4_k, gguf:q4_0, gguf:q8_0, nvidia:w4a16, int8:channel ...")] = "gguf:q4_k",
    out: Annotated[Path, typer.Option(help="Cache directory (resumable; keyed by checkpoint, samples and config).")] = Path("calib"),
    seed: Annotated[int, typer.Option(help="Sample selection seed.")] = 0,
) -> None:
    """Run the full-precision model layer by layer over samples and quantize each layer (resumable cache)."""
    cfg, result = _run(model, method, format, samples, n, 0.01, False, 0.5, out, seed)
    worst = sorted(result.layer_errors.items(), key=lambda kv: -kv[1])[:5]
    console.print(f"calibrated {len(result.quantized)} linears on {result.record['sequences']} sequences "
                  f"({result.record['tokens']} tokens); cache {out}")
    for name, e in worst:
        console.print(f"  rel. output error {e:.4f}  {name}")


@app.command("quantize")
def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    method: Annotated[str, typer.Option(help="rtn | gptq | awq | smoothquant (W8A8).")] = "gptq",
    precision: Annotated[str, typer.Option(help="int4 | int8.")] = "int4",
    format: Annotated[str, typer.Option("--format", help="gguf:q4_k | gguf:q4_0 | gguf:q4_1 | gguf:q5_k | gguf:q6_k | gguf:q8_0 | nvidia:w4a16 | int8:channel (default from --precision).")] = "",
    group_size: Annotated[int, typer.Option(help="Group size for nvidia:w4a16 (32, 64, 128).")] = 128,
    samples: Annotated[str, typer.Option(help="driving,embodied (built-in) or JSONL files.")] = "driving,embodied",
    n: Annotated[int, typer.Option("--n", help="Calibration samples.")] = 64,
    damp: Annotated[float, typer.Option(help="GPTQ Hessian damping (fraction of the mean diagonal).")] = 0.01,
    act_order: Annotated[bool, typer.Option("--act-order", help="GPTQ: columns by decreasing Hessian diagonal (static groups).")] = False,
    alpha: Annotated[float, typer.Option(help="SmoothQuant migration strength (0 = naive W8A8).")] = 0.5,
    evaluate: Annotated[int, typer.Option(help="Held-out samples for KL(FP||Q) against the full-precision model (0: skip).")] = 8,
    cache: Annotated[Path, typer.Option(help="Calibration cache directory.")] = Path("calib"),
    budget_bits: Annotated[Optional[float], typer.Option(help="GGUF mixed precision: average bits per decoder weight "
                                                              "(scales included); per-group types chosen by measured sensitivity.")] = None,
    candidates: Annotated[str, typer.Option(help="Formats --budget-bits may choose from.")] = "gguf:q4_k,gguf:q5_k,gguf:q6_k,gguf:q8_0",
    edge_layers: Annotated[int, typer.Option(help="Keep the first and last N layers' linears at --edge-format.")] = 0,
    edge_format: Annotated[str, typer.Option(help="Format of the --edge-layers.")] = "gguf:q8_0",
    lm_head: Annotated[str, typer.Option(help="GGUF type for lm_head (e.g. q8_0, q6_k, f16); default: the decoder's.")] = "",
    embeddings: Annotated[str, typer.Option(help="GGUF type for the token embeddings; default: the decoder's.")] = "",
    out: Annotated[Path, typer.Option(help="Output: a .gguf decoder for gguf:* formats; a ModelOpt unified checkpoint "
                                                 "directory for nvidia:w4a16 (W4A16_AWQ) and int8:channel (W8A8 SmoothQuant).")] = Path("decoder.gguf"),
) -> None:
    """Calibrate and quantize the decoder; write a GGUF or a ModelOpt unified checkpoint (codes packed exactly, never
    re-rounded) and report fidelity (quantization.json beside the output)."""
    from edgekit.errors import EdgekitError

    grid = format or PRECISION_GRIDS.get(precision, "")
    if not grid:
        raise EdgekitError(f"--precision {precision!r}: choose int4 or int8, or give --format")
    if grid == "nvidia:w4a16" and group_size != 128:
        grid = f"nvidia:w4a16:g{group_size}"
    if not grid.startswith("gguf:") and out.suffix == ".gguf":  # fail before calibrating
        raise EdgekitError(f"{grid} is written as a ModelOpt unified checkpoint directory: give --out DIR, not {out}")
    mixed = budget_bits is not None or edge_layers > 0
    if (mixed or lm_head or embeddings) and not grid.startswith("gguf:"):
        raise EdgekitError("--budget-bits, --edge-layers, --lm-head and --embeddings apply to GGUF formats")
    overrides, mixed_report = (), None
    if mixed:
        overrides, mixed_report = _mixed_grids(model, grid, candidates, budget_bits, edge_layers, edge_format,
                                               samples, n)
    cfg, result = _run(model, method, grid, samples, n, damp, act_order, alpha, cache, 0, overrides)
    report = {"method": method, "grid": grid, "calibration": result.record, "mixed_precision": mixed_report,
              "layer_errors": dict(sorted(result.layer_errors.items())),
              "worst_layers": dict(sorted(result.layer_errors.items(), key=lambda kv: -kv[1])[:8])}
    if evaluate:
        from edgekit.quant.evaluate import kl_against_reference

        report["fidelity"] = kl_against_reference(model, {method: result}, cfg, n_eval=evaluate)[method]
        console.print(f"held-out KL(FP||Q) per token {report['fidelity']['kl']:.5f}, top-1 agreement {report['fidelity']['top1']:.1%}")
    from edgekit.atomic import write_json

    if grid.startswith("gguf:"):
        from edgekit.export.gguf import write_decoder_gguf

        from edgekit.quant.mixed import linear_type_overrides

        types = linear_type_overrides(dict(overrides))
        if lm_head:
            types["lm_head.weight"] = lm_head
        if embeddings:
            types["model.embed_tokens.weight"] = embeddings
        write_decoder_gguf(model, out, grid.split(":")[1], calibrated=result, type_overrides=types)
        write_json(out.with_suffix(".quantization.json"), report)
    else:
        from edgekit.export.modelopt_reader import verify_unified_checkpoint
        from edgekit.export.modelopt_unified import write_unified_checkpoint

        summary = write_unified_checkpoint(model, out, result)
        console.print(f"{summary['quant_algo']}: {verify_unified_checkpoint(out)}")
        write_json(out / "quantization.json", report)
    console.print(f"wrote {out}")
