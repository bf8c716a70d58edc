"""SIGTERM/SIGINT become exceptions in the main thread, held back inside native sections (edgekit/interrupts.py)."""

from __future__ import annotations

import os
import signal

import pytest

from edgekit.interrupts import Terminated, install, native_section


@pytest.fixture
def handlers():
    restore = install()
    yield
    restore()


def _deliver(sig: int) -> None:
    os.kill(os.getpid(), sig)
    signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a syscall, so the handler runs before the next line


def test_signal_outside_a_native_section_raises_at_once(handlers):
    with pytest.raises(Terminated):
        _deliver(signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes; give it some
            pass
    with pytest.raises(KeyboardInterrupt):
        _deliver(signal.SIGINT)
        for _ in range(1000):
            pass


def test_signal_inside_a_native_section_waits_for_its_end(handlers):
    reached = []
    with pytest.raises(Terminated):
        with native_section():
            with native_section():  # nested: only the outermost end raises
                _deliver(signal.SIGTERM)
                for _ in range(1000):
                    pass
                reached.append("inner")
            _deliver(signal.SIGINT)  # a second signal inside: the first one that arrived wins
            reached.append("outer")
    assert reached == ["inner", "outer"]
    with native_section():  # nothing pending afterwards
        reached.append("clean")
    assert reached[-1] == "clean"


def test_restore_gives_back_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    install()()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_signal_during_an_import_is_delivered_once_the_import_is_done(handlers, tmp_path, monkeypatch):
    """The module sends itself SIGTERM while it is being imported: the import completes, then Terminated is raised."""
    (tmp_path / "edgekit_slow_import_probe.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "for _ in range(100000):\n"
        "    pass\n"
        "COMPLETED = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys
    import time

    with pytest.raises(Terminated):
        import edgekit_slow_import_probe  # noqa: F401

        time.sleep(5)  # the signal comes back within RETRY_S; sleep is interrupted by it
    assert sys.modules["edgekit_slow_import_probe"].COMPLETED
