"""One loaded bundle answering queued requests on a worker thread (llama.cpp's context and ONNX Runtime's session are
each used by one thread): up to `parallel` requests at once, one KV slot each (edgekit.runtime.kv_slots). A request is
admitted when a slot is free: its prompt is evaluated, reusing every cell a slot already holds; then each decode step
advances every admitted request by one token, in one batch.

A request's events go to its `emit` callback from the worker thread: ("delta", reasoning, content), then
("done", finish_reason, usage, timings) or ("error", status, type, message). A client that goes away sets `cancelled`:
its request ends at the next step and its slot takes the next request.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class Params:
    max_tokens: int
    temperature: float = 0.0  # 0: greedy, exactly `edgekit run --bundle`
    top_p: float = 1.0
    seed: int | None = None
    stops: tuple[str, ...] = ()
    think: bool = False
    gbnf: str | None = None  # response_format's grammar


@dataclass
class Job:
    turns: list  # (role, parts) as edgekit.model.prompt.prepare_chat takes them
    images: list  # decoded RGB images, in the order of the image slots
    params: Params
    emit: Callable[[tuple], None]
    deadline: float  # time.monotonic() after which the request is answered with a timeout
    cancelled: threading.Event = field(default_factory=threading.Event)


class EmbeddingCache:
    """Image embeddings by key (pixels + bundle seal), least recently used dropped beyond `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.hits, self.misses = max_bytes, 0, 0, 0
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str):
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        self._items[key] = value
        self.bytes += value.nbytes
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes


class Busy(Exception):
    """The queue is full."""


class Engine:
    def __init__(
        self,
        pipeline,
        *,
        max_queue: int,
        cache_bytes: int,
        observe: Callable[[str, float], None] = lambda stage, seconds: None,
    ):
        from edgekit.runtime.kv_slots import Slots

        self.pipeline = pipeline
        self.decoder = pipeline.decoder
        self.slots = Slots(self.decoder)
        self.reuse = hasattr(pipeline, "encode_chat")  # prompts as ids + embeddings; libmtmd's are evaluated whole
        self.cache = EmbeddingCache(cache_bytes)
        self.observe = observe  # (stage, seconds): the metrics
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.active = 0
        self._thread = threading.Thread(target=self._work, name="edgekit-engine", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize() + self.active

    def submit(self, job: Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy() from None

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _work(self) -> None:
        from edgekit.serve.reply import Reply

        replies: dict[int, Reply] = {}  # slot -> its answer
        rows: dict[int, int | np.ndarray] = {}  # slot -> its row in the last step, or its prompt's logits (a copy)
        stopping = False
        while replies or not stopping:
            pairs = []
            for slot, reply in list(replies.items()):  # every token chosen before any decode overwrites the logits
                row = rows.pop(slot)
                token = _guarded(
                    reply.job, lambda: reply.next(row if isinstance(row, np.ndarray) else self.decoder.logits_row(row))
                )
                if token is None:
                    reply.close()
                    del replies[slot]
                    self.slots.release(slot)
                else:
                    pairs.append((slot, token))
            self.active = len(replies)
            while not stopping and self.slots.free():
                try:
                    job = self._queue.get(block=not replies)
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                started = _guarded(job, lambda: self._start(job))
                if started is not None:
                    slot, reply = started
                    replies[slot] = reply
                    rows[slot] = self.decoder.last_logits()
            self.active = len(replies)
            if pairs:
                try:
                    self.slots.step(pairs)
                except Exception as e:
                    for slot, _ in pairs:
                        reply = replies.pop(slot)
                        reply.job.emit(("error", 500, "server_error", f"{type(e).__name__}: {e}"))
                        reply.close()
                        self.slots.release(slot)
                    continue
                rows.update((slot, i) for i, (slot, _) in enumerate(pairs))
        self.active = 0

    def _start(self, job: Job):
        """Admit a request: its prompt evaluated in a free slot. Returns (slot, Reply), or None (cancelled, timed out)."""
        from edgekit.serve.reply import Reply, timed_out

        if job.cancelled.is_set() or timed_out(job):  # while queued: no prefill for nothing
            return None
        p, t0 = job.params, time.perf_counter()
        if self.reuse:
            ids, embeds, (t_pre, t_vis) = self.pipeline.encode_chat(
                job.turns, job.images, think=p.think, cache=self.cache
            )
            n_prompt = len(ids)
            self.decoder.check_room(p.max_tokens, n_prompt)  # before the prefill's work
            t1 = time.perf_counter()
            slot, cached = self.slots.prefill(ids, embeds)
            t_prefill = time.perf_counter() - t1
        else:
            n_prompt, (t_pre, t_vis, t_prefill) = self.pipeline.prefill_chat(
                job.turns, job.images, think=p.think, max_new_tokens=p.max_tokens, cache=self.cache
            )
            slot, cached = self.slots.adopt(self.decoder.n_past), 0
        self.observe("vision", t_vis)
        self.observe("prefill", t_prefill)
        timings = {"preprocess": t_pre, "vision": t_vis, "prefill": t_prefill}
        try:
            return slot, Reply(
                job,
                self.decoder,
                prompt_tokens=n_prompt,
                cached_tokens=cached,
                timings=timings,
                started=t0,
                observe=self.observe,
            )
        except BaseException:  # e.g. a grammar llama.cpp refuses: the slot is free again
            self.slots.release(slot)
            raise


def _guarded(job: Job, work: Callable):
    """work(), or None after answering the job's client with the error (the server keeps serving)."""
    try:
        return work()
    except EdgekitError as e:
        job.emit(("error", 400, "invalid_request_error", str(e)))
    except Exception as e:  # the client gets a 500 with the reason
        job.emit(("error", 500, "server_error", f"{type(e).__name__}: {e}"))
    return None
