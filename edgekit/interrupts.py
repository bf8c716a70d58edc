"""SIGTERM and SIGINT as exceptions in the main thread, held back while native code that must not be unwound runs.

The console script turns SIGTERM into `Terminated` (and SIGINT into KeyboardInterrupt) so that `finally` blocks,
locks and atomic-write temporaries unwind as they do for any error. Python runs a signal handler between two
bytecodes of the main thread, which can be inside a Python callback that native code called (torch's TorchScript
tracer runs the model's forward from C++ during `torch.onnx.export`), or inside the import of a package whose
native extension is initialising (caught here: SIGINT during `import onnx` killed a build with SIGSEGV, the crash
inside protobuf's extension). An exception raised there unwinds through C frames that were not written for it.
So the handler raises only where that cannot happen:
  - inside `native_section()` (code that runs such native work wraps it), the signal is recorded and raised when
    the section ends, at a point where only Python frames are below;
  - during an import, the signal is sent again a moment later (a timer thread), until the import has finished;
    `deliver_deferred()` raises it at once where the caller knows no import runs (a loaded machine can otherwise
    finish the program before the timer thread gets a turn, and the signal is lost).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable

RETRY_S = 0.05  # how soon a signal that arrived during an import is delivered again
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as shells report them


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt."""


_pending: list[int] = []  # signals that arrived inside a native section, oldest first
_deferred: list[int] = []  # signals that arrived during an import, to be sent again
_depth = 0  # nesting of native sections


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _importing(frame) -> bool:
    """Whether the interrupted code runs inside an import (importlib's frozen bootstrap is on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _handler(signum, frame) -> None:
    if _depth:
        _pending.append(signum)
        return
    if _importing(frame):
        if signum not in _deferred:
            _deferred.append(signum)
        timer = threading.Timer(RETRY_S, _send_again, (signum,))
        timer.daemon = True
        timer.start()
        return
    _deferred.clear()
    raise _exception_for(signum)


def _send_again(signum: int) -> None:
    if signum in _deferred:  # not yet delivered by deliver_deferred()
        os.kill(os.getpid(), signum)


def deliver_deferred() -> None:
    """Raise the first signal an import held back, if one is still waiting (call where no import is running)."""
    if _deferred:
        signum = _deferred[0]
        _deferred.clear()
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
