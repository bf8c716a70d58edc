"""`edgekit export-vision`: the vision tower as a static-shape ONNX graph (fp32 | fp16 | int8 QDQ)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console, err_console


@app.command("export-vision")
def export_vision_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory (Hugging Face layout).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Output ONNX file; with several --resolution, "
            "one <stem>.<W>x<H>.onnx each. A <graph>.json report is written beside it.",
        ),
    ],
    resolution: Annotated[
        Optional[list[str]],
        typer.Option(
            "--resolution",
            help="Input image size WIDTHxHEIGHT (repeatable); the processor's resize to multiples "
            "of 28 px is applied, and the graph is built for that size.",
        ),
    ] = None,
    images: Annotated[int, typer.Option("--images", help="Images (cameras) per call, all at this resolution.")] = 1,
    precision: Annotated[
        str,
        typer.Option(
            help="fp32 | fp16 (norms, rotary, softmax stay fp32) | int8 "
            "(QDQ, per-channel weights, per-tensor symmetric activations)."
        ),
    ] = "fp16",
    samples: Annotated[
        Optional[list[str]],
        typer.Option(
            "--samples",
            help="Calibration / held-out images: a samples JSONL, a folder of them, an image folder, "
            "or a built-in set name (repeatable). Default: the built-in 'driving' and 'embodied' sets.",
        ),
    ] = None,
    calibration: Annotated[str, typer.Option(help="INT8 range calibration: minmax | percentile | entropy.")] = "minmax",
    calib_images: Annotated[int, typer.Option(help="At most this many calibration images (split 'calib').")] = 32,
    eval_images: Annotated[
        int, typer.Option(help="At most this many held-out images (split 'eval') for the cosine report.")
    ] = 16,
    keep_float: Annotated[
        Optional[list[str]],
        typer.Option(
            "--keep-float",
            help="INT8: parts left in float (repeatable): patch-embed, merger, or none. "
            "Default: both (they carry most of the INT8 error for ~2% of the MACs).",
        ),
    ] = None,
    gptq: Annotated[
        bool,
        typer.Option(
            help="INT8: choose the int8 weight codes by GPTQ on the calibration "
            "images (same scales and graph) instead of round-to-nearest."
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing --out file that edgekit did not write (never the checkpoint or the samples).",
        ),
    ] = False,
) -> None:
    """Export the vision tower + merger to ONNX for fixed resolutions, check it, and report accuracy vs FP32."""
    from edgekit.cli.options import parse_resolution
    from edgekit.export.vision_onnx import VisionExportConfig, export_vision

    cfg = VisionExportConfig(
        resolutions=tuple(parse_resolution(r) for r in (resolution or ["448x448"])),
        images=images,
        precision=precision,
        calibration=calibration,
        samples=tuple(samples) if samples else VisionExportConfig.samples,
        calib_images=calib_images,
        eval_images=eval_images,
        float_parts=VisionExportConfig.float_parts
        if keep_float is None
        else tuple(p for p in keep_float if p != "none"),
        gptq=gptq,
    )
    reports = export_vision(model, out, cfg, on_step=lambda msg: err_console.print(f"[dim]{msg}[/dim]"), force=force)
    for r in reports:
        line = (
            f"[green]wrote[/green] {r['graph']} ({r['precision']}, {r['resolution']} -> {r['resized_to']}, "
            f"{r['images']} image(s), {r['tokens']} tokens); fp32 vs torch max rel err "
            f"{r['fp32_vs_torch']['max_rel_error']:.1e}"
        )
        if "vs_fp32" in r:
            v = r["vs_fp32"]
            line += f"; cosine to fp32 mean {v['mean_cosine']:.5f} worst {v['min_cosine']:.5f} ({v['inputs']})"
        console.print(line)
