"""Pure text plumbing of a streamed answer: MiMo's `<think>…</think>` split from the answer, and stop strings.

Both work on text arriving in arbitrary pieces and hold back only what could still turn out to be a tag or a stop
string, so the concatenation of what they emit for a stream equals what they emit for the whole text at once.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def _partial_suffix(text: str, token: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `token`."""
    for n in range(min(len(text), len(token) - 1), 0, -1):
        if token.startswith(text[-n:]):
            return n
    return 0


class ThinkSplitter:
    """(reasoning, content) deltas: a `<think>` block at the start of the answer (after whitespace) is reasoning,
    the whitespace after its `</think>` is dropped, everything else is content. A model told not to think writes an
    empty block or none; both give empty reasoning."""

    def __init__(self):
        self.state, self.buf = "start", ""

    def feed(self, text: str) -> tuple[str, str]:
        self.buf += text
        reasoning = content = ""
        while True:
            if self.state == "start":
                head = self.buf.lstrip()
                if head.startswith(THINK_OPEN):
                    self.buf, self.state = head[len(THINK_OPEN) :], "reasoning"
                    continue
                if THINK_OPEN.startswith(head):  # empty, or still possibly the tag
                    return reasoning, content
                self.state = "content"
            elif self.state == "reasoning":
                i = self.buf.find(THINK_CLOSE)
                if i >= 0:
                    reasoning += self.buf[:i]
                    self.buf, self.state = self.buf[i + len(THINK_CLOSE) :], "after"
                    continue
                keep = _partial_suffix(self.buf, THINK_CLOSE)
                reasoning += self.buf[: len(self.buf) - keep]
                self.buf = self.buf[len(self.buf) - keep :]
                return reasoning, content
            elif self.state == "after":
                self.buf = self.buf.lstrip()
                if not self.buf:
                    return reasoning, content
                self.state = "content"
            else:
                content += self.buf
                self.buf = ""
                return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What is held back at the end: an unterminated block stays reasoning; the whitespace after a block is dropped
        (as in `feed`); anything else, whitespace-only answers included, is content, as `edgekit run` prints it."""
        rest, self.buf = self.buf, ""
        if self.state == "reasoning":
            return rest, ""
        return "", "" if self.state == "after" else rest


class StopScanner:
    """Cuts the text at the first stop string; holds back the tail that could be the start of one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.buf, self.stopped = "", False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf, self.stopped = self.buf[: min(hits)], "", True
            return out
        keep = max((_partial_suffix(self.buf, s) for s in self.stops), default=0)
        out = self.buf[: len(self.buf) - keep]
        self.buf = self.buf[len(self.buf) - keep :]
        return out

    def finish(self) -> str:
        rest, self.buf = ("" if self.stopped else self.buf), ""
        return rest
