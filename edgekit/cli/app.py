"""The Typer application object and the console, shared by every command module.

Command modules live in `edgekit/cli/commands/` and attach themselves with `@app.command()`.
They parse options, call one library function, and print with Rich. No numerics here.
Heavy libraries (torch, transformers, onnx, llama_cpp) are imported inside command bodies.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="edgekit",
    help="Turn a MiMo-Embodied (Qwen2.5-VL architecture) checkpoint into a verified edge bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

console = Console()
err_console = Console(stderr=True)

STATE = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    STATE["debug"] = debug


def progress(*, eta: bool = False):
    """A Rich progress bar for long work (transient, on stderr so --json output stays clean); eta adds the time left."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=err_console, transient=True)
