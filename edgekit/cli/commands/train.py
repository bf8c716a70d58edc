"""Command: train a MiMo-Embodied-architecture checkpoint from its random init on generated scenes (edgekit.train)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console, progress


@app.command("train-toy")
def train_toy_cmd(
    out: Annotated[
        Path,
        typer.Argument(
            help="Output checkpoint directory: new or empty, or an unfinished (or finished) "
            "run's to resume or continue it."
        ),
    ],
    preset: Annotated[
        str,
        typer.Option(
            help="Architecture preset to start from (make-tiny's random init, without "
            "planted outlier channels): tiny | small."
        ),
    ] = "tiny",
    minutes: Annotated[
        Optional[float],
        typer.Option(
            help="Stop after this much training time in all (across resumes); "
            "the checkpoint records the step count to reproduce it."
        ),
    ] = None,
    steps: Annotated[
        Optional[int],
        typer.Option(
            help="Stop at this many optimiser steps: same seed and steps, same "
            "bytes (on the same machine and --threads)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Init, training scenes and held-out scenes.")] = 0,
    batch: Annotated[Optional[int], typer.Option(help="Examples per step (default: the preset's recipe).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (AdamW; warm-up, then 1/sqrt(step)).")] = None,
    choice_reply: Annotated[
        Optional[str],
        typer.Option(
            help="How it learns to answer multiple choice: option_text (the "
            "option's words, the default) | letter_and_text ('B. Red')."
        ),
    ] = None,
    focus_crop_steps: Annotated[
        Optional[int],
        typer.Option(
            help="Curriculum: questions about one object (a traffic light, a named object's colour) see a crop "
            "around it that grows to the whole image over this many steps (default 0: off)."
        ),
    ] = None,
    focus_crop_start: Annotated[
        Optional[float], typer.Option(help="The curriculum's first crop, as a fraction of the image's sides.")
    ] = None,
    threads: Annotated[
        Optional[int], typer.Option(help="CPU threads (default: every core this process may use).")
    ] = None,
    eval_per_task: Annotated[
        int, typer.Option(help="Held-out questions per task and domain scored at the end; 0 skips.")
    ] = 20,
    save_every: Annotated[float, typer.Option(help="Seconds between saves of the resumable state.")] = 60.0,
) -> None:
    """Teach a MiMo-Embodied-architecture checkpoint the generated driving and table-top tasks (multiple choice,
    counting, grounding, descriptions; thinking off), training its vision tower, merger and decoder on the CPU, and
    write a normal checkpoint (safetensors, config, tokenizer, chat template) that every edgekit command takes. Prints
    held-out accuracy per task with 95% intervals. Kill it at any time: run the same command to resume."""
    import dataclasses

    from edgekit.atomic import write_json
    from edgekit.data.scene import TASK_ORDER
    from edgekit.train.examples import DOMAINS
    from edgekit.train.checkpoint_out import TRAINING_FILE
    from edgekit.train.heldout_eval import evaluate_heldout_with_control
    from edgekit.train.loop import train_toy
    from edgekit.train.recipe import default_recipe

    recipe = default_recipe(preset, seed)
    recipe = dataclasses.replace(
        recipe,
        **{
            k: v
            for k, v in {
                "batch": batch,
                "lr": lr,
                "choice_reply": choice_reply,
                "focus_crop_steps": focus_crop_steps,
                "focus_crop_start": focus_crop_start,
            }.items()
            if v is not None
        },
    )
    with progress(eta=steps is not None) as bar:
        task = bar.add_task(f"train-toy {preset}", total=steps)

        def on_step(step: int, loss: float, seconds: float) -> None:
            bar.update(task, completed=step, description=f"train-toy {preset} loss {loss:.3f} ({seconds / 60:.1f} min)")

        result = train_toy(
            out, recipe, steps=steps, minutes=minutes, threads=threads, save_every_s=save_every, on_step=on_step
        )
    resumed = f", resumed at step {result.resumed_at}" if result.resumed_at else ""
    console.print(
        f"trained {result.steps} steps ({result.steps * recipe.batch} examples) in "
        f"{result.seconds / 60:.1f} min{resumed}; wrote {out}"
    )
    if eval_per_task <= 0:
        return
    with progress() as bar:
        task = bar.add_task(
            "held-out scenes, then mismatched", total=2 * eval_per_task * len(TASK_ORDER) * len(DOMAINS)
        )
        report, control = evaluate_heldout_with_control(out, seed, eval_per_task, on_sample=lambda: bar.advance(task))
    record_path = out / TRAINING_FILE
    record = json.loads(record_path.read_text(encoding="utf-8"))
    write_json(record_path, record | {"heldout": report["tasks"], "heldout_mismatched": control["tasks"]})
    from rich.table import Table

    table = Table(title=f"held-out generated scenes ({eval_per_task} per task and domain)")
    for col in ("task", "metric", "all [95% CI]", "driving", "embodied", "mismatched", "chance"):
        table.add_column(col)
    for name, row in report["tasks"].items():
        a = row["all"]
        table.add_row(
            name,
            row["metric"],
            f"{a['mean']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]",
            f"{row['driving']['mean']:.3f}",
            f"{row['embodied']['mean']:.3f}",
            f"{control['tasks'][name]['all']['mean']:.3f}",
            f"{row['chance']:.3f}" if "chance" in row else "",
        )
    console.print(table)
    console.print("mismatched: each question asked about another scene, what the question alone earns")
