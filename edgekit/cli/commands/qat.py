"""Command: quantization-aware training of the decoder (edgekit.qat)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli.app import app, console, progress
from edgekit.cli.options import CALIBRATION_SAMPLES_HELP, DEVICE_OPTION_DEFAULT
from edgekit.devices import DEVICE_HELP
from edgekit.quant.formats import QUANTIZED_FORMATS


@app.command("qat")
def qat_cmd(
    model: Annotated[Path, typer.Argument(help="Full-precision checkpoint directory.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="The format to train for (its own grid and scale storage): " + " | ".join(QUANTIZED_FORMATS) + ".",
        ),
    ] = "gguf:q4_k",
    init: Annotated[str, typer.Option(help="PTQ result to start from: rtn | awq | gptq.")] = "gptq",
    samples: Annotated[str, typer.Option(help=CALIBRATION_SAMPLES_HELP)] = "default",
    n: Annotated[
        int,
        typer.Option(
            "--n",
            "--calib-n",
            help="Calibration sequences (split 'calib'); they train both "
            "phases. Under torchrun spell it --calib-n (torchrun reads --n as its own).",
        ),
    ] = 64,
    steps: Annotated[int, typer.Option(help="Phase 2 (end-to-end distillation of the scales) steps; 0 skips it.")] = 40,
    lr: Annotated[float, typer.Option(help="Phase 2 learning rate (Adam on the log of each float scale).")] = 1e-4,
    block_epochs: Annotated[
        int,
        typer.Option(
            help="Phase 1 (block-wise reconstruction): passes over the sequences "
            "per layer; 0 skips training (the init's codes)."
        ),
    ] = 2,
    block_lr: Annotated[float, typer.Option(help="Phase 1 learning rate of the latent weights, in grid steps.")] = 1e-2,
    scale_lr: Annotated[
        float,
        typer.Option(
            help="Phase 1 learning rate of the float scales (log); 0: phase 1 trains "
            "the weights only (the default: scales trained there overfit the "
            "calibration set in our measurements; phase 2 trains them)."
        ),
    ] = 0.0,
    batch: Annotated[int, typer.Option(help="Sequences per step (split across torchrun processes).")] = 4,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (a killed run resumes there).")] = 10,
    seed: Annotated[int, typer.Option(help="Sample selection and batch order seed.")] = 0,
    float_activations: Annotated[
        bool,
        typer.Option(
            "--float-activations",
            help="Train with float activations even "
            "where the runtime quantizes them (nvidia:fp8, nvidia:nvfp4); "
            "default: trained quantized, as they run.",
        ),
    ] = False,
    cache: Annotated[Path, typer.Option(help="Calibration cache of the PTQ init.")] = Path("calib"),
    out: Annotated[
        Path, typer.Option(help="QAT_DIR: a new or empty directory, or an unfinished run's to resume.")
    ] = Path("qat"),
    device: Annotated[
        str, typer.Option(help=DEVICE_HELP + " Under torchrun, rank r takes cuda:LOCAL_RANK.")
    ] = DEVICE_OPTION_DEFAULT,
) -> None:
    """Fine-tune the quantized decoder with the quantizer in the loop: block-wise reconstruction layer by layer, then
    distillation of the scales on the full-precision model's logits. Writes QAT_DIR, which `edgekit build` and
    `edgekit quantize` pack exactly (no second rounding). Data-parallel under `torchrun -m edgekit.qat`."""
    from edgekit.qat.run import QATSettings, run_qat
    from edgekit.quant.formats import parse

    settings = QATSettings(
        parse(format),
        init=init,
        samples=samples,
        n_samples=n,
        steps=steps,
        lr=lr,
        block_epochs=block_epochs,
        block_lr=block_lr,
        scale_lr=scale_lr,
        batch=batch,
        checkpoint_every=checkpoint_every,
        seed=seed,
        float_activations=float_activations,
    )
    with progress(eta=True) as bar:
        tasks: dict[str, int] = {}

        def on_step(label: str, done: int, total: int, loss: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, description=f"{label} loss {loss:.3e}")

        record = run_qat(
            model, out, settings, cache, on_step=on_step, on_stage=lambda s: console.print(s), device=device
        )
    losses = record["losses"]
    if losses["distill_first"] and losses["distill_last"]:
        console.print(f"distillation KL {losses['distill_first'][0]:.4e} -> {losses['distill_last'][0]:.4e}")
    console.print(
        f"wrote {out} ({record['format']}, init {record['init']}); build it with "
        f"`edgekit build {out} ...` or `edgekit quantize {out} --format {record['format']}`"
    )
