"""Commands about checkpoints: inspect, make-tiny, run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console, err_console, progress


def _gb(n: float) -> str:
    return f"{n / 1e9:.3f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


@app.command("inspect")
def inspect_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory (Hugging Face layout).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept pickle .bin weights (can run code).")
    ] = False,
) -> None:
    """Read config, safetensors headers and tokenizer (no tensor data) and print the model's dims and sizes."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.inspect import describe
    from edgekit.targets.sizes import inspect_weight_bytes

    ck = open_checkpoint(model, allow_pickle=allow_pickle)
    info = describe(ck) | {"weight_bytes": inspect_weight_bytes({n: t.shape for n, t in ck.tensors.items()})}
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    from rich.table import Table

    console.print(
        f"[bold]{info['architecture']}[/] ({info['model_type']}) at {info['path']}  stored as {', '.join(info['stored_dtypes'])}"
    )
    for part in ("text", "vision"):
        table = Table(title=f"{part} dims", show_header=False)
        for k, v in info[part].items():
            table.add_row(k, str(v))
        console.print(table)
    table = Table(
        title="parameters and weight bytes (int8: W8A8 per channel, decoder and vision linears; "
        "int4: W4A16 g128, decoder linears; the rest bf16)"
    )
    table.add_column("part")
    table.add_column("parameters", justify="right")
    for p in info["weight_bytes"]:
        table.add_column(p, justify="right")
    for part in ("vision", "decoder", "embeddings", "lm_head", "total"):
        params = (
            info["parameters"]["decoder_layers" if part == "decoder" else part]
            if part != "total"
            else info["parameters"]["total"]
        )
        table.add_row(part, f"{params:,}", *[_gb(info["weight_bytes"][p][part]) for p in info["weight_bytes"]])
    console.print(table)
    table = Table(title="special tokens")
    table.add_column("token")
    table.add_column("id", justify="right")
    for tok, i in info["special_tokens"].items():
        table.add_row(tok, str(i))
    console.print(table)


@app.command("make-tiny")
def make_tiny_cmd(
    out: Annotated[Path, typer.Argument(help="Output directory (must be new or empty).")],
    preset: Annotated[
        str,
        typer.Option(
            help="tiny (unit tests) | small (tens of M params) | medium (hundreds of M, "
            "real vocab size) | full (MiMo-Embodied-7B's exact dims, 16.6 GB: benchmarks)."
        ),
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Random seed: same preset and seed give the same bytes.")] = 0,
    plant_vision_peak: Annotated[
        Optional[int],
        typer.Option(
            help="Make this vision block's output carry activations of 1e5 (beyond FP16), as the real tower's grow: "
            "for testing the FP16 overflow guard."
        ),
    ] = None,
) -> None:
    """Write a random-weight checkpoint with MiMo-Embodied's architecture, for tests and benchmarks."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.fixtures import make_tiny

    with progress() as bar:
        task = bar.add_task(f"make-tiny {preset}", total=None)
        make_tiny(out, preset, seed, on_tensor=lambda name: bar.advance(task), plant_vision_peak=plant_vision_peak)
    ck = open_checkpoint(out)
    console.print(
        f"wrote {out}: {ck.parameter_counts()['total']:,} parameters, "
        f"text {ck.text.num_layers}x{ck.text.hidden}, vision {ck.vision.depth}x{ck.vision.hidden}, vocab {ck.text.vocab}"
    )


@app.command("run")
def run_cmd(
    model: Annotated[
        Optional[Path], typer.Argument(help="Checkpoint directory (full-precision reference through transformers).")
    ] = None,
    image: Annotated[
        Optional[list[Path]], typer.Option("--image", help="Image file; repeat for several cameras.")
    ] = None,
    prompt: Annotated[str, typer.Option(help="The question.")] = "Describe the scene.",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Stop after this many generated tokens.")] = 32,
    think: Annotated[
        bool, typer.Option("--think/--no-think", help="Let the model think aloud in <think>...</think> first.")
    ] = False,
    bundle: Annotated[Optional[Path], typer.Option(help="Run a built bundle instead of the reference model.")] = None,
    vision: Annotated[
        str,
        typer.Option(
            help="With --bundle: onnx (the bundle's vision graph in ONNX Runtime) or "
            "mmproj (everything in llama.cpp through libmtmd: the C++ host's path)."
        ),
    ] = "onnx",
    threads: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="With --bundle: threads (default: the setting `edgekit profile --tune` recorded, else every core).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer and token ids as JSON.")] = False,
    device: Annotated[
        str,
        typer.Option(
            help="Where the reference (MODEL) runs: auto | cpu | cuda[:N]. A bundle runs as it was built (--threads)."
        ),
    ] = "auto",
) -> None:
    """Answer a question about images greedily (the reference pipeline, or a bundle with --bundle)."""
    from edgekit.data.images import load_image
    from edgekit.errors import EdgekitError
    from edgekit.model.prompt import check_text

    check_text(prompt, "--prompt")
    images = [load_image(p) for p in (image or [])]
    if bundle is not None:
        from edgekit.runtime.bundle_pipeline import open_bundle

        pipe = open_bundle(bundle, n_threads=threads, vision=vision)
    elif model is not None:
        from edgekit.runtime.pipeline import ReferencePipeline

        pipe = ReferencePipeline(model, device=device)
    else:
        raise EdgekitError("give a checkpoint directory (MODEL) or --bundle DIR")
    stream = None if as_json else (lambda piece: console.print(piece, end="", highlight=False, markup=False))
    result = pipe.answer(prompt, images, think=think, max_new_tokens=max_new_tokens, on_text=stream)
    if as_json:
        print(
            json.dumps(
                {
                    "answer": result.text,
                    "token_ids": result.token_ids,
                    "backend": result.backend,
                    "timings": result.timings,
                },
                sort_keys=True,
            )
        )
    else:
        console.print()
        err_console.print(f"[dim]{result.backend}: {len(result.token_ids)} tokens[/]")
