"""Commands: build (checkpoint -> bundle), verify (bundle integrity and loadability), demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console, err_console, progress
from edgekit.cli.options import CALIBRATION_SAMPLES_HELP, DEVICE_OPTION_DEFAULT, GGUF_TYPES
from edgekit.devices import DEVICE_HELP
from edgekit.quant.precisions import BUILD_PRECISIONS


def _stage_printer(bar, task):
    """Stage lines above a progress bar whose description is the running stage (and its steps, with an ETA)."""

    def show(name: str, status: str) -> None:
        if status == "running":
            bar.update(task, description=name, completed=0, total=None)
        else:
            mark = {"done": "[green]✓[/]", "cached": "[dim]✓ (cached)[/]"}[status]
            bar.console.print(f"  {mark} {name}")

    return show


@app.command("build")
def build_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory (Hugging Face layout).")],
    target: Annotated[str, typer.Option(help="Target name or alias (see `edgekit targets`).")] = "cpu",
    precision: Annotated[
        str,
        typer.Option(
            help=" | ".join(BUILD_PRECISIONS) + " (the target's recipe says which it "
            "takes: `edgekit targets`; nvfp4: ModelOpt NVFP4 (W4A4) on tensorrt, llama.cpp's NVFP4 on gguf; mxfp4: "
            "llama.cpp's MXFP4, gguf only; fp8: ModelOpt FP8 (W8A8 E4M3), tensorrt only)."
        ),
    ] = "int4",
    method: Annotated[
        Optional[str],
        typer.Option(
            help="Quantizer for the decoder: rtn | gptq | awq | smoothquant. "
            "Default: gptq on --samples; on tensorrt, where the activations are "
            "quantized too (w8a8, fp8, nvfp4), smoothquant (SmoothQuant's "
            "migration, then RTN per channel for w8a8, GPTQ for fp8/nvfp4); "
            "nothing to quantize at fp16/fp32."
        ),
    ] = None,
    backend: Annotated[
        Optional[str],
        typer.Option(
            help="tensorrt (ModelOpt unified checkpoint for Edge-LLM) | gguf (llama.cpp). Default: the target's first."
        ),
    ] = None,
    samples: Annotated[str, typer.Option(help=CALIBRATION_SAMPLES_HELP)] = "default",
    calib_n: Annotated[int, typer.Option("--calib-n", min=1, help="Calibration samples to use.")] = 64,
    group_size: Annotated[
        int, typer.Option(help="Columns per scale of the tensorrt backend's W4A16 (32, 64, 128).")
    ] = 128,
    context: Annotated[int, typer.Option(min=1, help="Context length the engines are planned for.")] = 4096,
    images: Annotated[
        int, typer.Option(min=1, max=16, help="Cameras per prompt (the vision graph is built for this many).")
    ] = 1,
    resolution: Annotated[
        Optional[str], typer.Option(help="Camera resolution WIDTHxHEIGHT (default: the target's).")
    ] = None,
    gguf_type: Annotated[
        Optional[str], typer.Option(help="Override the decoder GGUF type: " + ", ".join(GGUF_TYPES) + ".")
    ] = None,
    vision_precision: Annotated[
        Optional[str],
        typer.Option(
            help="Vision tower ONNX: fp32 | fp16 | int8 (default: int8 "
            "for int8/w8a8 builds, else fp16 on GPUs, fp32 on CPUs)."
        ),
    ] = None,
    calib_cache: Annotated[
        Optional[Path],
        typer.Option(
            help="Where decoder calibrations are kept between builds, so a "
            "rebuild does not calibrate again (default: $EDGEKIT_CACHE_DIR or "
            "~/.cache/edgekit, /calibration)."
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Bundle directory to write: absent, empty, or an earlier edgekit "
            "bundle (replaced once the new one verifies). Default: "
            "bundle-TARGET-PRECISION."
        ),
    ] = None,
    allow_nonfinite: Annotated[
        bool,
        typer.Option("--allow-nonfinite", help="Carry NaN/Inf weights through instead of refusing the checkpoint."),
    ] = False,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = DEVICE_OPTION_DEFAULT,
) -> None:
    """Build a bundle: plan, vision ONNX, quantized decoder, build-engines.sh, manifest. Resumes after a failure
    or an interrupt (rerun the same command); never deletes files it did not write."""
    from edgekit.bundle.build import BuildConfig, build_bundle
    from edgekit.cli.options import parse_resolution

    config = BuildConfig(
        target=target,
        precision=precision,
        method=method,
        backend=backend,
        samples=samples,
        calib_n=calib_n,
        group_size=group_size,
        context=context,
        images=images,
        resolution=parse_resolution(resolution) if resolution else None,
        vision_precision=vision_precision,
        gguf_type=gguf_type,
    )
    out = out or Path(f"bundle-{target}-{precision}")
    err_console.print(f"building {out} for {target} at {precision}")
    with progress(eta=True) as bar:
        task = bar.add_task("plan", total=None)
        path = build_bundle(
            model,
            out,
            config,
            on_stage=_stage_printer(bar, task),
            allow_nonfinite=allow_nonfinite,
            calib_cache=calib_cache,
            device=device,
            on_progress=lambda what, done, total: bar.update(task, description=what, completed=done, total=total),
        )
    console.print(f"bundle written: {path}")


@app.command("verify")
def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    shallow: Annotated[
        bool, typer.Option("--shallow", help="Only check the manifest and hashes, not loadability.")
    ] = False,
) -> None:
    """Check a bundle: schema, every artifact's sha256 and size, and that each artifact loads in its runtime."""
    from edgekit.bundle.manifest import verify_bundle
    from edgekit.errors import EdgekitError

    report = verify_bundle(bundle, deep=not shallow)
    for line in report.checked:
        console.print(f"[green]ok[/] {line}", highlight=False)
    if not report.ok:
        for line in report.errors[1:]:
            err_console.print(f"[red]FAIL[/] {line}", highlight=False)
        raise EdgekitError(f"{bundle}: does not verify: {report.errors[0]}", exit_code=1)
    console.print(f"[bold green]{bundle}: verified[/] ({len(report.checked)} checks)")


@app.command("demo")
def demo_cmd(
    workdir: Annotated[
        Path, typer.Option(help="Where the generated checkpoint and bundle go (reused on reruns).")
    ] = Path("edgekit-demo"),
    preset: Annotated[str, typer.Option(help="Generated checkpoint size: tiny | small.")] = "tiny",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length.")] = 16,
) -> None:
    """Run the whole path on a generated checkpoint: plan, build for cpu at int4, answer a driving and an
    embodied sample through the bundle next to the full-precision reference, print fidelity and latency."""
    from rich.table import Table

    from edgekit.bench.demo import run_demo

    info, rows = run_demo(
        workdir, preset=preset, max_new_tokens=max_new_tokens, log=lambda m: err_console.print(m, highlight=False)
    )
    table = Table(title="bundle (cpu, int4) vs full-precision reference")
    for col in ("domain", "token agreement", "KL(FP||int4) 1st token", "reference s", "bundle s"):
        table.add_column(col, justify="right" if col != "domain" else "left")
    for r in rows:
        table.add_row(
            r.domain, f"{r.token_agreement:.0%}", f"{r.first_token_kl:.4f}", f"{r.reference_s:.2f}", f"{r.bundle_s:.2f}"
        )
    console.print(table)
    for r in rows:
        console.print(f"[bold]{r.domain}[/] ({r.sample_id}): {r.question}", highlight=False)
        console.print(f"  reference: {r.reference!r}\n  bundle:    {r.bundle!r}", highlight=False, markup=False)
    console.print(
        "(random weights: the answers are word salad; what matters is how closely the bundle follows the reference)"
    )
    console.print(f"bundle: {info['bundle']}  try: edgekit verify {info['bundle']}", highlight=False)
