"""One pipeline (the reference or a bundle) loaded once in its own process, answering requests over a pipe.

Why a process per pipeline: its peak RSS is its own (VmHWM of the worker: `peak_rss_mb`), a crash in a runtime (SIGILL,
SIGSEGV) stops one variant with a message instead of the whole run, and thread settings (OMP_WAIT_POLICY, thread
counts) are read when a runtime's libraries load, so each worker gets its own environment before it imports them.
The parent sends one request at a time, so exactly one pipeline computes while the others wait in recv().

Requests (op, payload) -> (ok, reply):
  answer   {question, images, think, max_new_tokens, stop_at_end} -> Answer fields, and `worker_s`
  teacher  {question, images, think, answer_ids} -> float32 logits [len(answer_ids) + 1, vocab]
  rss      {} -> {peak_rss_mb, rss_mb}
  close    {} -> None, then the worker exits
Payloads are pickled between our own two processes (images as PIL images, logits as numpy arrays); nothing read
from disk is unpickled.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class WorkerSpec:
    kind: str  # "reference" | "bundle"
    path: str
    threads: int | None  # None: the bundle's measured setting on this machine (runtime.settings), else every core
    dtype: str = "float32"  # the reference's torch dtype
    env: tuple[tuple[str, str], ...] = ()  # set before any runtime library loads


def _open(spec: WorkerSpec) -> tuple[object, str]:
    """The pipeline, and its thread settings in words."""
    from edgekit.runtime.bundle_pipeline import open_bundle
    from edgekit.cores import available_cores

    if spec.kind == "reference":
        import torch

        torch.set_num_threads(spec.threads or available_cores())
        from edgekit.runtime.pipeline import ReferencePipeline

        return ReferencePipeline(spec.path, dtype=spec.dtype), f"{torch.get_num_threads()} torch thread(s)"
    pipe = open_bundle(spec.path, n_threads=spec.threads)
    # The policy this process's libgomp read when llama.cpp loaded: the spec's environment, or the recorded setting.
    policy = os.environ.get("OMP_WAIT_POLICY", "").lower() or "default"
    return pipe, f"{pipe.settings.threads} thread(s), OMP_WAIT_POLICY={policy}"


def peak_rss_mb() -> float:
    """This process's own peak resident set: VmHWM of its address space. Not ru_maxrss: Linux carries that across
    exec from the forked copy of the parent, so a worker spawned by a large parent would report the parent's peak."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory() -> dict:
    import psutil

    return {"peak_rss_mb": peak_rss_mb(), "rss_mb": psutil.Process().memory_info().rss / 2**20}


def _serve(conn, spec: WorkerSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    os.environ.update(dict(spec.env))
    try:
        t0 = time.perf_counter()
        pipe, threads = _open(spec)
        conn.send(
            (True, {"load_s": time.perf_counter() - t0, "backend": pipe.backend, "threads": threads, **_memory()})
        )
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent as one message
        conn.send((False, _describe(e)))
        return
    while True:
        op, payload = conn.recv()
        try:
            if op == "close":
                pipe.close()
                conn.send((True, None))
                return
            conn.send((True, _handle(pipe, op, payload)))
        except BaseException as e:  # noqa: BLE001
            conn.send((False, _describe(e)))


def _handle(pipe, op: str, p: dict):
    if op == "answer":
        t0 = time.perf_counter()
        a = pipe.answer(
            p["question"],
            p["images"],
            think=p["think"],
            max_new_tokens=p["max_new_tokens"],
            stop_at_end=p.get("stop_at_end", True),
        )
        return {**asdict(a), "worker_s": time.perf_counter() - t0}
    if op == "teacher":
        return pipe.teacher_logits(p["question"], p["images"], think=p["think"], answer_ids=p["answer_ids"])
    if op == "rss":
        return _memory()
    raise ValueError(f"unknown request {op!r}")


def _describe(e: BaseException) -> str:
    message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
    return message if isinstance(e, EdgekitError) else f"{message}\n{traceback.format_exc(limit=8)}"


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self, name: str, spec: WorkerSpec):
        self.name, self.spec = name, spec
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited thread pools or locks
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, spec), name=f"edgekit-bench:{name}", daemon=True)
        self._proc.start()
        child.close()
        self.info = self._receive("load")

    def call(self, op: str, **payload):
        self._conn.send((op, payload))
        return self._receive(op)

    def _receive(self, op: str):
        try:
            ok, reply = self._conn.recv()
        except (EOFError, ConnectionResetError):
            self._proc.join(timeout=5)
            code = self._proc.exitcode
            how = f"killed by signal {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}"
            raise EdgekitError(f"{self.name}: its runtime process died during '{op}' ({how})") from None
        if not ok:
            raise EdgekitError(f"{self.name}: {op} failed: {reply}")
        return reply

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("close", {}))
                if self._conn.poll(10):
                    self._conn.recv()
            except (OSError, EOFError):
                pass
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
        self._conn.close()


def spec_for(
    kind: str, path: Path, *, threads: int | None, dtype: str = "float32", env: dict | None = None
) -> WorkerSpec:
    return WorkerSpec(kind, str(path), threads, dtype, tuple(sorted((env or {}).items())))
