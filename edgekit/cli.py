"""Entry point of the `edgekit` console script: one-line errors, exit codes, --debug."""

from __future__ import annotations

import sys

import click

from edgekit.cli_app import STATE, app, err_console
from edgekit.commands import load_all
from edgekit.errors import EdgekitError

load_all()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Returns the exit code (also raises SystemExit when used as a script)."""
    args = list(sys.argv[1:] if argv is None else argv)
    STATE["debug"] = "--debug" in args
    try:
        app(args=args, prog_name="edgekit", standalone_mode=False)
        code = 0
    except EdgekitError as e:
        if STATE["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {e.message}", highlight=False, soft_wrap=True)
        code = e.exit_code
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.ClickException as e:
        e.show()
        code = e.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        code = 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        code = 130
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
