"""Commands: targets (list device recipes) and plan (memory fit and roofline before building)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console


@app.command("targets")
def targets_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List deployment targets (edgekit/targets/recipes/*.toml) with their memory, bandwidth and precisions."""
    from dataclasses import asdict

    from rich.table import Table

    from edgekit.targets import all_targets

    targets = all_targets()
    if as_json:
        print(json.dumps({n: asdict(t) for n, t in targets.items()}, indent=2, sort_keys=True))
        return
    table = Table(title="targets")
    for col in ("name", "aliases", "GPU", "memory", "bandwidth", "FP16 tensor", "precisions", "backends", "camera"):
        table.add_column(col)
    for t in targets.values():
        table.add_row(
            t.name,
            ", ".join(t.aliases),
            t.gpu_arch,
            f"{t.memory_gb:g} GB",
            f"{t.memory_bandwidth_gbs:g} GB/s",
            f"{t.fp16_tensor_tflops:g} TFLOPS",
            " ".join(t.precisions),
            " ".join(t.backends),
            "x".join(map(str, t.camera_resolution)),
        )
    console.print(table)


@app.command("plan")
def plan_cmd(
    model: Annotated[Path, typer.Argument(help="Checkpoint directory or its config.json (weights not needed).")],
    target: Annotated[str, typer.Option(help="Target name or alias (see `edgekit targets`).")] = "orin",
    precision: Annotated[str, typer.Option(help="fp16 | int8 | w8a8 | int4 (fp32 on cpu).")] = "int4",
    context: Annotated[int, typer.Option(min=1, help="Context length for the KV cache.")] = 4096,
    images: Annotated[int, typer.Option(min=1, help="Cameras (images) per prompt.")] = 1,
    resolution: Annotated[
        Optional[str], typer.Option(help="Camera resolution WIDTHxHEIGHT (default: the target's).")
    ] = None,
    backend: Annotated[Optional[str], typer.Option(help="tensorrt | gguf (default: the target's first).")] = None,
    group_size: Annotated[int, typer.Option(help="W4A16 group size on tensorrt (32, 64, 128).")] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Memory needed vs the target's memory, and roofline bounds for decode, vision and prefill. Exit 2 if it cannot fit."""
    from rich.table import Table

    from edgekit.cli.options import parse_resolution
    from edgekit.targets import get_target
    from edgekit.targets.plan import config_dims, make_plan, refuse_if_unfit

    text, vision, shapes, processor = config_dims(model)
    plan = make_plan(
        text,
        vision,
        shapes,
        get_target(target),
        precision,
        context,
        images,
        parse_resolution(resolution) if resolution else None,
        backend=backend,
        group_size=group_size,
        processor=processor,
    )
    if as_json:
        print(json.dumps(plan.as_dict(), indent=2, sort_keys=True))
    else:
        table = Table(
            title=f"plan: {plan.target}, {plan.precision} (vision {plan.vision_precision}), context {plan.context}, {plan.images} x {plan.resolution[0]}x{plan.resolution[1]}"
        )
        table.add_column("item")
        table.add_column("value", justify="right")
        for part, gb in plan.weights_gb.items():
            table.add_row(f"weights: {part}", f"{gb:.3f} GB")
        table.add_row("KV cache (fp16)", f"{plan.kv_cache_gb:.3f} GB")
        table.add_row("vision activations", f"{plan.vision_activations_gb:.3f} GB")
        table.add_row("reserved (OS, runtime)", f"{plan.reserved_gb:.1f} GB")
        table.add_row("[bold]total / target memory", f"[bold]{plan.total_gb:.2f} / {plan.memory_gb:g} GB")
        table.add_row(
            f"decoder bytes read per token (after a {plan.prompt_tokens}-token prompt)",
            f"{plan.decode_bytes_per_token_gb:.3f} GB",
        )
        table.add_row("decode bound (bandwidth / bytes)", f"{plan.decode_tokens_per_s_bound:.1f} tokens/s")
        table.add_row(
            f"decode bound at {plan.context} tokens", f"{plan.decode_tokens_per_s_bound_full_context:.1f} tokens/s"
        )
        table.add_row("vision encoder bound (FLOPs / peak)", f"{plan.vision_ms_bound:.2f} ms")
        table.add_row("prefill bound", f"{plan.prefill_ms_bound:.1f} ms")
        table.add_row("visual tokens per image", str(plan.visual_tokens_per_image))
        console.print(table)
        for note in plan.notes:
            console.print(f"[yellow]note:[/] {note}")
    refuse_if_unfit(plan)
