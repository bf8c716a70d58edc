"""One request's answer as it is written, a token at a time: the choice of each token (greedy, sampled, or within a
grammar), the text split into reasoning and content, stop strings, the end (a stop, max_tokens, the client leaving,
the deadline). The engine gives it each step's logits and feeds back the token it chose."""

from __future__ import annotations

import codecs
import time

import numpy as np


def timed_out(job) -> bool:
    """Past its deadline: the client gets a 503 (timeout) and the worker stops."""
    if time.monotonic() <= job.deadline:
        return False
    job.emit(("error", 503, "timeout", "the request ran past the server's --timeout"))
    return True


class Reply:
    def __init__(
        self,
        job,
        decoder,
        *,
        prompt_tokens: int,
        cached_tokens: int,
        timings: dict,
        started: float,
        observe=lambda stage, seconds: None,
    ):
        from edgekit.serve.text_stream import StopScanner, ThinkSplitter

        self.job, self.decoder, self.p = job, decoder, job.params
        self.prompt_tokens, self.cached_tokens = prompt_tokens, cached_tokens
        self.timings, self.started, self.observe = timings, started, observe
        self.grammar = None
        if self.p.gbnf:
            from edgekit.runtime.grammar import GrammarConstraint

            self.grammar = GrammarConstraint(decoder, self.p.gbnf)
        self.rng = np.random.default_rng(self.p.seed)
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops, self.think = StopScanner(list(self.p.stops)), ThinkSplitter()
        self.n = 0  # tokens generated
        self.decode_started = time.perf_counter()

    def next(self, logits: np.ndarray) -> int | None:
        """The token to feed after this step's `logits` [vocab] (a view, read before the next decode), or None when the
        answer is over (its last events sent, or none for a client that left)."""
        from edgekit.serve.sampling import next_token

        if self.job.cancelled.is_set() or timed_out(self.job):
            self.close()
            return None
        p, g = self.p, self.grammar
        self.n += 1
        token = (
            int(logits.argmax())
            if p.temperature <= 0 and g is None
            # in place, as `edgekit run`
            else next_token(np.array(logits), p.temperature, p.top_p, self.rng, g.allowed(logits) if g else None)
        )
        if self.decoder.is_end(token):
            self.n -= 1
            return self.finish("stop")
        if g:
            g.accept(token)
        self._send(self.utf8.decode(self.decoder.token_bytes(token)))
        if self.stops.stopped:
            return self.finish("stop")
        if self.n >= p.max_tokens:
            return self.finish("length")
        return token

    def _send(self, text: str) -> None:
        reasoning, content = self.think.feed(self.stops.feed(text))
        if reasoning or content:
            self.job.emit(("delta", reasoning, content))

    def finish(self, reason: str) -> None:
        self._send(self.utf8.decode(b"", final=True))
        reasoning, content = self.think.feed(self.stops.finish())
        r2, c2 = self.think.finish()
        if reasoning + r2 or content + c2:
            self.job.emit(("delta", reasoning + r2, content + c2))
        end = time.perf_counter()
        timings = dict(self.timings, decode=end - self.decode_started, total=end - self.started)
        self.observe("decode", timings["decode"])
        usage = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.n,
            "total_tokens": self.prompt_tokens + self.n,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }
        self.job.emit(("done", reason, usage, timings))
        self.close()
        return None

    def close(self) -> None:
        if self.grammar:
            self.grammar.close()
            self.grammar = None
