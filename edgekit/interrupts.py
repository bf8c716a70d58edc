"""SIGTERM and SIGINT as exceptions in the main thread, held back while native code that must not be unwound runs.

The console script turns SIGTERM into `Terminated` (and SIGINT into KeyboardInterrupt) so that `finally` blocks,
locks and atomic-write temporaries unwind as they do for any error. Python runs a signal handler between two
bytecodes of the main thread, which can be inside a Python callback that native code called (torch's TorchScript
tracer runs the model's forward from C++ during `torch.onnx.export`). An exception raised there unwinds through
C++ frames that were not written for it: a build once died with SIGSEGV instead of exit 143 that way. Code that
runs such native work wraps it in `native_section()`: a signal arriving inside is recorded and raised when the
section ends, at a point where only Python frames are below.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt."""


_pending: list[int] = []  # signals that arrived inside a native section, oldest first
_depth = 0  # nesting of native sections


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _handler(signum, frame) -> None:
    if _depth:
        _pending.append(signum)
        return
    raise _exception_for(signum)


def install() -> Callable[[], None]:
    """Handle SIGTERM and SIGINT as above (main thread only). Returns a function that restores the old handlers."""
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore


@contextmanager
def native_section():
    """Hold SIGTERM/SIGINT back until this block ends, then raise the first one that arrived."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            signum = _pending[0]
            _pending.clear()
            raise _exception_for(signum)
