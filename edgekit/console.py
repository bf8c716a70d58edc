"""The `edgekit` console script. A Ctrl-C or SIGTERM while the CLI is still being imported ends like one
during a command — one line, 130 or 143 — never a traceback (CI once sent one there, on a slow machine). The signal
handlers go in before the import (they hold a signal back until an import has finished, see interrupts.py) and stay
for the command, which installs them once more over these."""

from __future__ import annotations

import sys

from edgekit.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, deliver_deferred, install


def main() -> None:
    install()
    try:
        from edgekit.cli import main as run_cli

        deliver_deferred()  # a signal that arrived during that import ends the program here, never lost
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; nothing was written\n")
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        sys.stderr.write("terminated; nothing was written\n")
        sys.exit(EXIT_TERMINATED)
    run_cli()
