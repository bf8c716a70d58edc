"""Entry point of the `edgekit` console script: one-line errors, exit codes, --debug."""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

import typer

from edgekit.cli.app import STATE, app, err_console
from edgekit.cli.commands import load_all
from edgekit.errors import EdgekitError
from edgekit.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, deliver_deferred
from edgekit.interrupts import install as install_signal_handlers

load_all()

# typer 0.29 vendors its own click (typer._click), whose usage errors derive from typer.exceptions.TyperException,
# not from the standalone click package's classes; older typers re-export click's. Either way a usage error is
# never a traceback (tests/cli/test_cli_usage.py).
try:
    from typer.exceptions import TyperException as ClickException
except ImportError:  # typer < 0.26
    from click import ClickException
ClickExit, ClickAbort = typer.Exit, typer.Abort


# Commands whose finished work survives an interruption (build stages, calibration layers, QAT steps).
RESUMABLE = ("build", "calibrate", "quantize", "qat", "train-toy")
RESUME_HINT = "finished stages are kept: rerun the same command to resume"


def interrupted_message(args: list[str], word: str = "interrupted") -> str:
    return f"{word}; {RESUME_HINT}" if _command(args) in RESUMABLE else f"{word}; nothing was written"


def _command(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Returns the exit code (also raises SystemExit when used as a script).

    Exit codes: 0 success; 1 the work ran and failed (a bundle that does not verify, a broken environment,
    another build holding --out); 2 bad input (usage, options, files); 130 Ctrl-C; 143 SIGTERM."""
    args = list(sys.argv[1:] if argv is None else argv)
    STATE["debug"] = "--debug" in args
    restore = None
    if argv is None:  # the console script (tests calling main() in-process keep their own handlers)
        faulthandler.enable()  # a crash in native code prints every thread's Python stack, not just "-11"
        restore = install_signal_handlers()
    try:
        rv = app(args=args, prog_name="edgekit", standalone_mode=False)
        deliver_deferred()  # a signal held back by a command's last lazy import is not lost at exit
        # Non-standalone typer returns (not raises) an exit code, 130 on Ctrl-C; commands themselves return None.
        code = rv if isinstance(rv, int) else 0
        if code == EXIT_INTERRUPTED:
            err_console.print(interrupted_message(args))
    except Terminated:
        err_console.print(interrupted_message(args, "terminated"))
        code = EXIT_TERMINATED
    except EdgekitError as e:
        if STATE["debug"]:
            raise
        message = e.message
        if "no space left on device" in message and _command(args) in RESUMABLE:
            message += f" ({RESUME_HINT})"
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        code = e.exit_code
    except ClickExit as e:
        code = e.exit_code
    except ClickException as e:  # usage errors: typer's short usage message, exit 2
        e.show()
        code = e.exit_code
    except OSError as e:  # the net under every file operation that has no message of its own
        if STATE["debug"]:
            raise
        import errno

        from edgekit.atomic import write_error

        where = Path(e.filename) if e.filename is not None else Path("a file")
        message = (
            write_error(where, e).message
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
            else f"{where}: {e.strerror or e}"
        )
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        code = 2
    except ClickAbort:
        err_console.print("aborted")
        code = EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err_console.print(interrupted_message(args))
        code = EXIT_INTERRUPTED
    finally:
        if restore is not None:
            restore()
    if argv is None:
        sys.exit(code)
    return code
