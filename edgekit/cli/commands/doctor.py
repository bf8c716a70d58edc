"""Command: doctor (what this machine can do for edgekit, with the fix for anything broken)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edgekit.cli.app import app, console

_STYLE = {"green": "[green]ok[/]  ", "yellow": "[yellow]warn[/]", "red": "[bold red]FAIL[/]"}


@app.command("doctor")
def doctor_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    llama_only: Annotated[
        bool,
        typer.Option("--llama-only", help="Check only the CPU and the llama.cpp build (what scripts/install.sh runs)."),
    ] = False,
    no_objdump: Annotated[
        bool, typer.Option("--no-objdump", help="Skip disassembling libggml-cpu for AMX instructions (a few seconds).")
    ] = False,
) -> None:
    """Check this machine: CPU features, the llama.cpp build (AMX SIGILL risk), onnxruntime, torch, transformers,
    nvcc and its sm targets, the Edge-LLM exporter, memory and disk. Exit 1 when the default path is broken."""
    from edgekit.runtime.doctor import as_json as to_json
    from edgekit.runtime.doctor import healthy, run_checks

    checks = run_checks(llama_only=llama_only, inspect_code=not no_objdump)
    if as_json:
        print(json.dumps(to_json(checks), indent=2, sort_keys=True))
    else:
        for c in checks:
            console.print(f"{_STYLE[c.status]} [bold]{c.name:<18}[/] {c.detail}", highlight=False, soft_wrap=True)
            if c.fix:
                console.print(f"      {'':<18} fix: {c.fix}", highlight=False, soft_wrap=True)
    if not healthy(checks):
        raise typer.Exit(1)
