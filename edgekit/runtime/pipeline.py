"""Answer a question about images end to end: the verbs every pipeline shares, and the reference pipeline.

Every pipeline has the same verbs, so the CLI, the benchmark and the C++ host's tests can swap backends freely:
  answer(question, images, think, max_new_tokens, on_text, stop_at_end) -> Answer (greedy)
  teacher_logits(question, images, think, answer_ids) -> float32 [len(answer_ids) + 1, vocab]
  close()
A built bundle is opened by edgekit.runtime.bundle_pipeline.open_bundle.

Timings are per stage, in seconds: preprocess (image processor and tokenizer), vision (tower and merger), prefill
(the decoder over the prompt until the first token is chosen), decode (every later token), total.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

STAGES = ("preprocess", "vision", "prefill", "decode")


@dataclass
class Answer:
    text: str
    token_ids: list[int]  # generated ids, without the end-of-generation token
    backend: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (STAGES) and "total"
    prompt_ids: list[int] = field(default_factory=list)


class TextStreamer:
    """Turns a growing list of token ids into newly completed text pieces (byte-level BPE safe)."""

    def __init__(self, decode: Callable[[list[int]], str], on_text: Callable[[str], None] | None):
        self.decode, self.on_text, self.ids, self.printed = decode, on_text, [], ""

    def push(self, token_id: int) -> None:
        self.ids.append(token_id)
        text = self.decode(self.ids)
        if self.on_text and not text.endswith("\ufffd"):  # wait until a multi-byte character completes
            self.on_text(text[len(self.printed) :])
            self.printed = text


class _VisionClock:
    """Seconds spent inside a module's forward, summed over calls (forward hooks; the reference's vision tower)."""

    def __init__(self, module):
        self.seconds, self._start = 0.0, None
        self._hooks = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._start = time.perf_counter()

    def _post(self, module, args, output):
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


class ReferencePipeline:
    """transformers in float32 (or the dtype asked for): the oracle."""

    def __init__(self, checkpoint: str | Path, *, dtype: str = "float32", device: str = "cpu"):
        from edgekit.runtime.torch_ref import TorchReference

        self.ref = TorchReference(checkpoint, dtype=dtype, device=device)
        where = "" if self.ref.device.type == "cpu" else f", {self.ref.device}"
        self.backend = f"reference (transformers, {dtype}{where})"

    def answer(
        self,
        question: str,
        images: list,
        *,
        think: bool = False,
        max_new_tokens: int = 32,
        on_text: Callable[[str], None] | None = None,
        stop_at_end: bool = True,
    ) -> Answer:
        t0 = time.perf_counter()
        inputs = self.ref.prepare(question, images, think=think)
        t1 = time.perf_counter()
        stream = TextStreamer(self.ref.decode, on_text)
        first: list[float] = []

        def on_token(token: int) -> None:
            if not first:
                first.append(time.perf_counter())
            stream.push(token)

        clock = _VisionClock(self.ref.model.model.visual)
        try:
            ids = self.ref.generate(inputs, max_new_tokens, on_token=on_token, stop_at_end=stop_at_end)
        finally:
            clock.remove()
        t2 = time.perf_counter()
        if stop_at_end:
            ends = [i for i, t in enumerate(ids) if t in self.ref.eos_ids]
            ids = ids[: ends[0]] if ends else ids
        t_first = first[0] if first else t2
        timings = {
            "preprocess": t1 - t0,
            "vision": clock.seconds,
            "prefill": t_first - t1 - clock.seconds,
            "decode": t2 - t_first,
            "total": t2 - t0,
        }
        return Answer(self.ref.decode(ids), ids, self.backend, timings, inputs.input_ids[0].tolist())

    def teacher_logits(self, question: str, images: list, *, think: bool, answer_ids: list[int]):
        import numpy as np

        inputs = self.ref.prepare(question, images, think=think)
        return np.ascontiguousarray(self.ref.continuation_logits(inputs, list(answer_ids)).numpy(), dtype=np.float32)

    def close(self) -> None:
        pass
