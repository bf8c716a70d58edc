"""Commands about sample sets: `edgekit samples make` (synthetic scenes) and `edgekit samples check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekit.cli.app import app, console

samples_app = typer.Typer(
    help="Make and check JSONL sample sets (calibration and evaluation data).", no_args_is_help=True
)
app.add_typer(samples_app, name="samples")


@samples_app.command("make")
def make_cmd(
    out: Annotated[Path, typer.Argument(help="Output directory for driving.jsonl, embodied.jsonl and the PNG images.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Samples (one scene each) per domain.")] = 24,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives byte-identical files.")] = 0,
) -> None:
    """Draw synthetic driving and table-top scenes with exact ground truth."""
    from edgekit.data.synthetic import write_sample_set

    for path in write_sample_set(out, n, seed):
        console.print(f"wrote {path}")


@samples_app.command("check")
def check_cmd(
    spec: Annotated[
        str,
        typer.Argument(
            help="A .jsonl file, a directory of them, or a built-in set (driving, embodied; comma-separated)."
        ),
    ],
) -> None:
    """Load and validate every line (fields, image files), then print counts per domain, task and split."""
    from rich.table import Table

    from edgekit.data.samples import load_samples
    from edgekit.data.selection import counts

    samples = load_samples(spec)  # raises EdgekitError (exit 2) listing file:line problems
    table = Table(title=f"{len(samples)} valid samples in {spec}")
    for col in ("domain", "task", "split", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for (domain, task, split), k in counts(samples).items():
        table.add_row(domain, task, split, str(k))
    console.print(table)
