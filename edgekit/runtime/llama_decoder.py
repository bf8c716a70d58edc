"""The text decoder in llama.cpp (through llama-cpp-python's low-level C API).

A prompt's text runs are decoded as tokens; its image runs (`prompt_segments`) as embeddings with M-RoPE
positions, the way llama.cpp's multimodal helper feeds them: four positions per token, section-major, in a batch
that has room for 4*n positions.

`logits()` returns every prompt position's logits (for parity tests); `generate()` streams greedy tokens through
one reused batch, reading the argmax in llama.cpp's own logits buffer (no copy of the vocabulary per token).
"""

from __future__ import annotations

import codecs
import ctypes
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edgekit.closing import Closing
from edgekit.errors import EdgekitError
from edgekit.runtime.llama_batch import Batch
from edgekit.runtime.llama_setup import context_params, silence_llama_logs
from edgekit.runtime.prompt_segments import (
    ImageEmbedding,
    prompt_positions,
    section_major,
    split_prompt,
)


class LlamaDecoder(Closing):
    """A GGUF decoder in llama.cpp, fed token ids and image embeddings."""

    def __init__(
        self,
        gguf_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_batch: int = 512,
        n_threads: int = 2,
        kv_cache: str = "f16",
        image_token_id: int | None = None,
        label: str | Path | None = None,
        n_seq: int = 1,
    ):
        """gguf_path may be a verified bundle's descriptor path (/proc/self/fd/N): llama.cpp then opens the very file
        that was hashed. label names the file in messages (default: gguf_path). n_seq > 1: that many sequences (KV
        slots, edgekit.runtime.kv_slots) in one unified cache of n_seq * n_ctx cells, each up to n_ctx positions."""
        import llama_cpp as lib

        from edgekit.runtime.llama_build import ensure_llama_safe

        ensure_llama_safe()  # refuse an AMX build that would SIGILL this whole process (llama.cpp PR #26954)
        path = Path(gguf_path)
        self._model = self._ctx = None
        if not path.is_file():
            raise EdgekitError(f"{path}: GGUF file not found; write it with `edgekit export-decoder --format gguf`")
        source, path = path, Path(label) if label is not None else path
        self._lib = lib
        cparams = context_params(lib, n_ctx=n_ctx, n_seq=n_seq, n_batch=n_batch, n_threads=n_threads, kv_cache=kv_cache)
        silence_llama_logs(lib)
        lib.llama_backend_init()
        mparams = lib.llama_model_default_params()
        self._model = lib.llama_model_load_from_file(str(source).encode(), mparams)
        if not self._model:
            raise EdgekitError(f"{path}: llama.cpp could not load this GGUF (see the error above)")
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            lib.llama_model_free(self._model)
            self._model = None  # freed: close() and __del__ must not free it again
            raise EdgekitError(
                f"{path}: llama.cpp could not create a context (n_ctx={n_ctx}"
                + (f" x {n_seq} slots" if n_seq > 1 else "")
                + "); lower n_ctx"
            )
        self._vocab = lib.llama_model_get_vocab(self._model)
        self.n_ctx, self.n_batch, self.n_seq = n_ctx, n_batch, n_seq
        self.hidden = lib.llama_model_n_embd(self._model)
        self.n_vocab = lib.llama_vocab_n_tokens(self._vocab)
        self.image_token_id = image_token_id if image_token_id is not None else self._special_id("<|image_pad|>")
        self.n_past = 0  # next text position
        self.prompt_tokens = 0  # KV cells the last prompt took (M-RoPE positions of an image take fewer)
        self._one: Batch | None = None  # the decode loop's one-token batch, made on first use

    # ---- tokenizer --------------------------------------------------------------------------------
    @property
    def vocab_handle(self):
        """llama.cpp's vocabulary of the loaded model (for samplers such as runtime/grammar.py's)."""
        return self._vocab

    def tokenize(self, text: str, *, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (self._lib.llama_token * cap)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, cap, False, parse_special)
        if n < 0:
            raise AssertionError("token buffer too small")  # cap >= bytes + 16 always suffices for BPE
        return list(buf[:n])

    def _special_id(self, text: str) -> int | None:
        ids = self.tokenize(text)
        return ids[0] if len(ids) == 1 else None

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self._vocab, token, buf, 256, 0, special)
        return buf.raw[: max(n, 0)]

    def is_end(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    # ---- decoding ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
        self.n_past = 0

    def _decode(self, batch: Batch, *, read: bool = True) -> list[np.ndarray]:
        """Run one batch; copy out the logits it asked for (none when read is False: they stay in the context)."""
        rc = self._lib.llama_decode(self._ctx, batch.struct)
        if rc != 0:
            raise EdgekitError(f"llama_decode failed (code {rc}); the prompt may exceed n_ctx={self.n_ctx}")
        if not read:
            return []
        return [self.logits_row(int(i)).copy() for i in np.flatnonzero(batch.logits)]  # each [vocab]

    def logits_row(self, i: int) -> np.ndarray:
        """float32 [vocab]: output i of the last decode (-1: the last one), a view of llama.cpp's own buffer, valid
        until the next decode."""
        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,))

    def last_logits(self) -> np.ndarray:
        """A copy of the last decoded position's logits [vocab] (after a prompt evaluated here or by libmtmd)."""
        return self.logits_row(-1).copy()

    def _feed_text(
        self, ids: list[int], pos: np.ndarray, all_logits: bool, read: bool = True, seq: int = 0
    ) -> list[np.ndarray]:
        """Token ids at 1-D positions pos [k] (llama.cpp copies a token's position to every section)."""
        logits = []
        for s in range(0, len(ids), self.n_batch):
            chunk = np.asarray(ids[s : s + self.n_batch], dtype=np.int32)  # [k]
            want = np.full(len(chunk), int(all_logits), np.int8)
            want[-1] = 1
            seqs = np.full(len(chunk), seq, np.int32)
            batch = Batch(self._lib, tokens=chunk, pos=pos[s : s + len(chunk)], want_logits=want, seqs=seqs)
            logits += self._decode(batch, read=read)
        return logits if all_logits else logits[-1:]

    def _feed_image(
        self, image: ImageEmbedding, pos3: np.ndarray, all_logits: bool, read: bool = True, seq: int = 0
    ) -> list[np.ndarray]:
        """Embeddings [n, hidden] at M-RoPE positions pos3 [3, n], in batches of at most n_batch tokens."""
        if image.embeds.shape[1] != self.hidden:
            raise EdgekitError(
                f"image embeddings have width {image.embeds.shape[1]} but the decoder's hidden size is "
                f"{self.hidden}; the vision backend and the GGUF come from different checkpoints"
            )
        n = pos3.shape[1]
        logits = []
        for s in range(0, n, self.n_batch):
            e = min(n, s + self.n_batch)
            want = np.full(e - s, int(all_logits), np.int8)
            want[-1] = 1
            seqs = np.full(e - s, seq, np.int32)
            batch = Batch(
                self._lib, embeds=image.embeds[s:e], pos=section_major(pos3[:, s:e]), want_logits=want, seqs=seqs
            )
            logits += self._decode(batch, read=read)
        return logits if all_logits else logits[-1:]

    def prefill(
        self,
        input_ids: Sequence[int],
        images: Sequence[ImageEmbedding] = (),
        *,
        all_logits: bool = False,
        read: bool = True,
    ) -> list[np.ndarray]:
        """Feed a whole prompt from an empty cache; returns the last logits (or every position's; nothing when read
        is False, for `greedy_token`)."""
        self.reset()
        self.prompt_tokens = len(input_ids)
        segments = split_prompt(input_ids, self.image_token_id, images)
        positions = self.positions_of(segments)
        logits = self.feed_segments(segments, positions, all_logits=all_logits, read=read)
        self.n_past = int(positions.max()) + 1 if positions.shape[1] else 0
        return logits if all_logits else logits[-1:]

    def positions_of(self, segments) -> np.ndarray:
        """int32 [3, L]: the prompt's M-RoPE positions, refused when they pass the context."""
        positions = prompt_positions(segments)  # [3, L]
        if positions.shape[1] and positions.max() >= self.n_ctx:
            raise EdgekitError(
                f"the prompt reaches position {positions.max()} but the context holds {self.n_ctx}; "
                "raise n_ctx or use smaller images"
            )
        return positions

    def feed_segments(
        self,
        segments,
        positions: np.ndarray,
        *,
        skip: int = 0,
        seq: int = 0,
        all_logits: bool = False,
        read: bool = True,
    ) -> list[np.ndarray]:
        """Decode a prompt's segments at their positions [3, L] into sequence `seq`, from its cell `skip` on (the
        cells before it are already in the cache; `skip` never falls inside an image)."""
        logits: list[np.ndarray] = []
        at = 0
        for kind, seg in segments:
            n = len(seg) if kind == "text" else seg.embeds.shape[0]
            if at + n > skip:
                pos = positions[:, max(at, skip) : at + n]
                if kind == "text":
                    logits += self._feed_text(seg[max(0, skip - at) :], pos[0], all_logits, read, seq)
                elif skip > at:
                    raise AssertionError("a prompt is never resumed inside an image")
                else:
                    logits += self._feed_image(seg, pos, all_logits, read, seq)
            at += n
        return logits

    def step(self, token: int) -> np.ndarray:
        """Append one token after the prompt (or the previous step); returns its next-token logits [vocab]."""
        out = self._feed_text([int(token)], np.array([self.n_past], np.int32), all_logits=False)[-1]
        self.n_past += 1
        return out

    def advance(self, token: int) -> None:
        """Append one token, leaving its next-token logits in llama.cpp (read by `greedy_token`): the decode loop's
        step, through one reused batch and without copying the vocabulary's logits."""
        if self._one is None:
            self._one = Batch(
                self._lib, tokens=np.zeros(1, np.int32), pos=np.zeros(1, np.int32), want_logits=np.ones(1, np.int8)
            )
        self._one.tokens[0] = token  # the batch points at these buffers
        self._one.pos[0] = self.n_past
        self._decode(self._one, read=False)
        self.n_past += 1

    def decode_tokens(self, tokens: Sequence[int], pos: Sequence[int], seqs: Sequence[int]) -> None:
        """One batch of single tokens, token i at position pos[i] of sequence seqs[i] (the slots' decode step); row i's
        next-token logits stay in llama.cpp (`logits_row(i)`)."""
        n = len(tokens)
        self._decode(
            Batch(
                self._lib,
                tokens=np.asarray(tokens, np.int32),
                pos=np.asarray(pos, np.int32),
                want_logits=np.ones(n, np.int8),
                seqs=np.asarray(seqs, np.int32),
            ),
            read=False,
        )

    def seq_remove(self, seq: int, from_pos: int = -1) -> None:
        """Drop sequence `seq`'s cells at positions >= from_pos (-1: all of them); cells other sequences share stay."""
        self._lib.llama_memory_seq_rm(self._lib.llama_get_memory(self._ctx), seq, from_pos, -1)

    def seq_copy(self, src: int, dst: int, until_pos: int) -> None:
        """Sequence `dst` takes `src`'s cells at positions < until_pos (shared in the unified cache, not copied)."""
        self._lib.llama_memory_seq_cp(self._lib.llama_get_memory(self._ctx), src, dst, 0, until_pos)

    def greedy_token(self) -> int:
        """argmax of the last decoded position's logits, read in place (a view of llama.cpp's buffer, no copy); ties go
        to the lowest id, as numpy's argmax on the copied logits and llama.cpp's greedy sampler both do."""
        return int(self.logits_row(-1).argmax())

    def logits(self, input_ids: Sequence[int], images: Sequence[ImageEmbedding] = ()) -> np.ndarray:
        """float32 [L, vocab]: next-token logits after every prompt position."""
        return np.stack(self.prefill(input_ids, images, all_logits=True))

    def continuation_logits(
        self, input_ids: Sequence[int], images: Sequence[ImageEmbedding], continuation: Sequence[int]
    ) -> np.ndarray:
        """Teacher forcing: float32 [len(continuation) + 1, vocab], the logits predicting each continuation token and
        the one after them, given the prompt followed by `continuation` (logits only where they are read)."""
        first = self.prefill(input_ids, images)  # [1] x [vocab]
        return np.stack(first + self.extend(list(continuation)))

    def extend(self, tokens: list[int]) -> list[np.ndarray]:
        """Append tokens after the prompt (or earlier steps); returns each one's next-token logits [vocab]."""
        if not tokens:
            return []
        pos = np.arange(self.n_past, self.n_past + len(tokens), dtype=np.int32)  # [A]
        out = self._feed_text(tokens, pos, all_logits=True)
        self.n_past += len(tokens)
        return out

    def generate(
        self,
        input_ids: Sequence[int],
        images: Sequence[ImageEmbedding] = (),
        *,
        max_new_tokens: int = 64,
        stop_at_end: bool = True,
    ) -> Iterator[int]:
        """Greedy decoding, one token id at a time, stopping at an end-of-generation token (unless stop_at_end is
        False: exactly max_new_tokens, for latency profiling)."""
        self.prefill(input_ids, images, read=False)
        yield from self.greedy_continuation(max_new_tokens, stop_at_end=stop_at_end)

    def check_room(self, max_new_tokens: int, prompt_tokens: int | None = None) -> None:
        """Refuse, before the first token, an answer that cannot fit in the context after the prompt (as the C++
        host: prompt tokens + new tokens <= context). `prompt_tokens`: a prompt not evaluated yet (default: the last)."""
        used = self.prompt_tokens if prompt_tokens is None else prompt_tokens
        if used + max_new_tokens > self.n_ctx:
            raise EdgekitError(
                f"--max-new-tokens {max_new_tokens}: the prompt takes {used} of the "
                f"context's {self.n_ctx} tokens, leaving room for "
                f"{max(0, self.n_ctx - used)}; ask for fewer, or build the bundle with a "
                "larger --context"
            )

    def greedy_continuation(self, max_new_tokens: int, *, stop_at_end: bool = True) -> Iterator[int]:
        """Greedy tokens after what the context holds: a prompt just evaluated (here, or by libmtmd with n_past set
        to the position it returned), its next-token logits still in llama.cpp."""
        self.check_room(max_new_tokens)
        for i in range(max_new_tokens):
            token = self.greedy_token()
            if stop_at_end and self.is_end(token):
                return
            yield token
            if i + 1 < max_new_tokens:  # the last token needs no next distribution
                self.advance(token)

    def stream_text(
        self, input_ids: Sequence[int], images: Sequence[ImageEmbedding] = (), *, max_new_tokens: int = 64
    ) -> Iterator[str]:
        """Greedy decoding as text pieces; multi-byte characters split across tokens are held back."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for token in self.generate(input_ids, images, max_new_tokens=max_new_tokens):
            piece = decoder.decode(self.token_bytes(token))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None
