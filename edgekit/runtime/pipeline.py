"""Answer a question about images end to end: the verb every pipeline shares, and the reference pipeline.

Every pipeline has the same verb, `answer(question, images, think, max_new_tokens, on_text)`,
so the CLI, the benchmark and the C++ host's tests can swap backends freely. A built bundle is opened
by edgekit.runtime.bundle_pipeline.open_bundle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Answer:
    text: str
    token_ids: list[int]
    backend: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class TextStreamer:
    """Turns a growing list of token ids into newly completed text pieces (byte-level BPE safe)."""

    def __init__(self, decode: Callable[[list[int]], str], on_text: Callable[[str], None] | None):
        self.decode, self.on_text, self.ids, self.printed = decode, on_text, [], ""

    def push(self, token_id: int) -> None:
        self.ids.append(token_id)
        text = self.decode(self.ids)
        if self.on_text and not text.endswith("\ufffd"):  # wait until a multi-byte character completes
            self.on_text(text[len(self.printed):])
            self.printed = text


class ReferencePipeline:
    """transformers in float32: the oracle."""

    backend = "reference (transformers, float32)"

    def __init__(self, checkpoint: str | Path):
        from edgekit.runtime.torch_ref import TorchReference

        self.ref = TorchReference(checkpoint)

    def answer(self, question: str, images: list, *, think: bool = False, max_new_tokens: int = 32,
               on_text: Callable[[str], None] | None = None) -> Answer:
        t0 = time.perf_counter()
        inputs = self.ref.prepare(question, images, think=think)
        t1 = time.perf_counter()
        stream = TextStreamer(self.ref.decode, on_text)
        ids = self.ref.generate(inputs, max_new_tokens, on_token=stream.push)
        t2 = time.perf_counter()
        return Answer(self.ref.decode(ids), ids, self.backend, {"preprocess": t1 - t0, "generate": t2 - t1})
