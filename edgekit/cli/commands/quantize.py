"""Commands: calibrate and quantize the decoder on embodied/driving samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console, progress
from edgekit.cli.options import CALIBRATION_SAMPLES_HELP, DEVICE_OPTION_DEFAULT
from edgekit.devices import DEVICE_HELP
from edgekit.bundle.quantize import DEFAULT_CANDIDATES
from edgekit.quant.formats import FORMATS, QUANTIZED_FORMATS


def _bar_progress(bar):
    """A Progress callback (stage, description, done, total) drawing one bar per stage."""
    tasks: dict[str, int] = {}

    def update(stage: str, description: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(description, total=total)
        bar.update(tasks[stage], total=total, completed=done, description=description)

    return update


@app.command("calibrate")
def calibrate_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    samples: Annotated[str, typer.Option(help=CALIBRATION_SAMPLES_HELP)] = "default",
    n: Annotated[int, typer.Option("--n", help="Calibration samples (split 'calib').")] = 128,
    method: Annotated[str, typer.Option(help="rtn | gptq | awq | smoothquant.")] = "gptq",
    format: Annotated[
        str, typer.Option("--format", help="Target grid: " + " | ".join(QUANTIZED_FORMATS) + ".")
    ] = "gguf:q4_k",
    out: Annotated[
        Path, typer.Option(help="Cache directory (resumable; keyed by checkpoint, samples and config).")
    ] = Path("calib"),
    seed: Annotated[int, typer.Option(help="Sample selection seed.")] = 0,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = DEVICE_OPTION_DEFAULT,
) -> None:
    """Run the full-precision model layer by layer over samples and quantize each layer (resumable cache)."""
    from edgekit.quant.calibrate import QuantConfig, calibrate
    from edgekit.quant.precisions import quantize_format

    cfg = QuantConfig(
        method=method, grid=quantize_format("", format).grid_name, samples=samples, n_samples=n, seed=seed
    )
    with progress() as bar:
        step = _bar_progress(bar)
        result = calibrate(
            model,
            cfg,
            out,
            on_layer=lambda i, t, status: step("calibrate", f"{method} on {cfg.grid}: layer {i} {status}", i + 1, t),
            device=device,
        )
    worst = sorted(result.layer_errors.items(), key=lambda kv: -kv[1])[:5]
    console.print(
        f"calibrated {len(result.quantized)} linears on {result.record['sequences']} sequences "
        f"({result.record['tokens']} tokens); cache {out}"
    )
    for name, e in worst:
        console.print(f"  rel. output error {e:.4f}  {name}")


@app.command("quantize")
def quantize_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    method: Annotated[str, typer.Option(help="rtn | gptq | awq | smoothquant (W8A8).")] = "gptq",
    precision: Annotated[str, typer.Option(help="int4 | int8.")] = "int4",
    format: Annotated[
        str,
        typer.Option(
            "--format", help=" | ".join(QUANTIZED_FORMATS) + " (nvidia:w4a16 = :g128; default from --precision)."
        ),
    ] = "",
    group_size: Annotated[
        Optional[int],
        typer.Option(help="Group size for nvidia:w4a16 (32, 64, 128; default: the format's, 128 for nvidia:w4a16)."),
    ] = None,
    samples: Annotated[str, typer.Option(help=CALIBRATION_SAMPLES_HELP)] = "default",
    n: Annotated[int, typer.Option("--n", help="Calibration samples.")] = 64,
    damp: Annotated[float, typer.Option(help="GPTQ Hessian damping (fraction of the mean diagonal).")] = 0.01,
    act_order: Annotated[
        bool, typer.Option("--act-order", help="GPTQ: columns by decreasing Hessian diagonal (static groups).")
    ] = False,
    weighted_fit: Annotated[
        bool,
        typer.Option(
            "--weighted-fit/--plain-fit",
            help="GPTQ on Q4_K/Q5_K: search each "
            "block's scales weighted by its inputs' importance (llama.cpp's "
            "importance-matrix rule) or by the weights alone.",
        ),
    ] = True,
    alpha: Annotated[
        float,
        typer.Option(
            help="SmoothQuant migration strength, 0 to 1 (0: none; --method smoothquant on "
            "int8:channel, nvidia:fp8, nvidia:nvfp4)."
        ),
    ] = 0.5,
    evaluate: Annotated[
        int, typer.Option(help="Held-out samples for KL(FP||Q) against the full-precision model (0: skip).")
    ] = 8,
    cache: Annotated[Path, typer.Option(help="Calibration cache directory.")] = Path("calib"),
    budget_bits: Annotated[
        Optional[float],
        typer.Option(
            help="GGUF mixed precision: average bits per decoder weight "
            "(scales included); per-group types chosen by measured sensitivity."
        ),
    ] = None,
    candidates: Annotated[str, typer.Option(help="Formats --budget-bits may choose from.")] = DEFAULT_CANDIDATES,
    edge_layers: Annotated[int, typer.Option(help="Keep the first and last N layers' linears at --edge-format.")] = 0,
    edge_format: Annotated[str, typer.Option(help="Format of the --edge-layers.")] = "gguf:q8_0",
    lm_head: Annotated[
        str, typer.Option(help="GGUF type for lm_head (e.g. q8_0, q6_k, f16); default: the decoder's.")
    ] = "",
    embeddings: Annotated[str, typer.Option(help="GGUF type for the token embeddings; default: the decoder's.")] = "",
    out: Annotated[
        Path,
        typer.Option(
            help="Output: a .gguf decoder for gguf:* formats; a ModelOpt unified checkpoint "
            "directory for the ModelOpt formats ("
            + ", ".join(n for n in QUANTIZED_FORMATS if FORMATS[n].container == "modelopt")
            + ")."
        ),
    ] = Path("decoder.gguf"),
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing --out file that edgekit did not write "
            "(never the checkpoint, the cache or the samples).",
        ),
    ] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = DEVICE_OPTION_DEFAULT,
) -> None:
    """Calibrate and quantize the decoder; write a GGUF or a ModelOpt unified checkpoint (codes packed exactly, never
    re-rounded) and report fidelity (quantization.json beside the output)."""
    from edgekit.quant.formats import parse
    from edgekit.quant.precisions import quantize_format
    from edgekit.bundle.quantize import QuantizeConfig, candidate_formats, quantize

    cfg = QuantizeConfig(
        quantize_format(precision, format, group_size),
        method=method,
        samples=samples,
        n_samples=n,
        damp=damp,
        act_order=act_order,
        weighted_fit=weighted_fit,
        alpha=alpha,
        evaluate=evaluate,
        budget_bits=budget_bits,
        candidates=candidate_formats(candidates),
        edge_layers=edge_layers,
        edge_format=parse(edge_format),
        lm_head=parse(lm_head) if lm_head else None,
        embeddings=parse(embeddings) if embeddings else None,
    )
    with progress() as bar:
        report = quantize(model, out, cfg, cache, _bar_progress(bar), force=force, device=device)
    mixed = report["mixed_precision"]
    if mixed:
        console.print(
            f"mixed precision: {mixed['average_bits']:.3f} bits/weight over the decoder linears; "
            f"groups per format {mixed['formats_per_group']}"
        )
    if "fidelity" in report:
        console.print(
            f"held-out KL(FP||Q) per token {report['fidelity']['kl']:.5f}, "
            f"top-1 agreement {report['fidelity']['top1']:.1%}"
        )
    if "unified" in report:
        console.print(f"{report['unified']['quant_algo']}: {report['unified_check']}")
    console.print(f"wrote {out}")
