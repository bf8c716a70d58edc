"""Constrained decoding with llama.cpp's own grammar engine (GBNF): which tokens may come next, for edgekit's decode
loop. JSON Schema becomes GBNF through llama-cpp-python's converter (the one llama-server's schema support comes
from), so `response_format` answers parse."""

from __future__ import annotations

import ctypes
import json

import numpy as np

from edgekit.closing import Closing
from edgekit.errors import EdgekitError

MAX_SCHEMA_BYTES = 64 << 10
# JSON Schema keywords llama-cpp-python's converter does not turn into grammar: a schema using one is refused rather
# than answered with JSON that may break it.
UNENFORCED = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "patternProperties",
    "contains",
    "minContains",
    "maxContains",
)


def _unenforced(node, where: str = "schema") -> str | None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in UNENFORCED and where.rsplit(".", 1)[-1] != "properties":
                return f"{where}.{key}"
            found = _unenforced(value, f"{where}.{key}")
            if found:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = _unenforced(value, f"{where}.{i}")
            if found:
                return found
    return None


def gbnf_for(response_format: dict) -> str | None:
    """OpenAI's response_format -> GBNF (None: unconstrained text). EdgekitError for a schema it cannot take."""
    from llama_cpp import llama_grammar

    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return llama_grammar.JSON_GBNF
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise EdgekitError("response_format.json_schema.schema must be a JSON Schema object")
        text = json.dumps(schema)
        bad = _unenforced(schema)
        if bad:
            raise EdgekitError(
                f"response_format {bad}: not enforced by the grammar (llama.cpp's JSON-schema "
                f"converter ignores {bad.rsplit('.', 1)[-1]}); leave it out and check the value"
            )
        if len(text) > MAX_SCHEMA_BYTES:
            raise EdgekitError(f"response_format schema is over {MAX_SCHEMA_BYTES} bytes")
        try:
            return llama_grammar.json_schema_to_gbnf(text)
        except Exception as e:  # the converter raises plain exceptions on what it does not support
            raise EdgekitError(f"response_format schema not supported: {e}") from None
    raise EdgekitError(f"response_format type {kind!r}: choose text, json_object or json_schema")


class GrammarConstraint(Closing):
    """A grammar sampler on the decoder's vocabulary: `allowed(logits)` masks what may come next, `accept(token)`
    advances it."""

    def __init__(self, decoder, gbnf: str):
        import llama_cpp as lib

        self._lib = lib
        self._sampler = lib.llama_sampler_init_grammar(decoder.vocab_handle, gbnf.encode(), b"root")
        if not self._sampler:
            raise EdgekitError("llama.cpp refused the grammar")
        n = decoder.n_vocab
        self._data = (lib.llama_token_data * n)()
        self._view = np.ctypeslib.as_array(ctypes.cast(self._data, ctypes.POINTER(ctypes.c_float)), shape=(n * 3,))
        self._ids = np.arange(n, dtype=np.int32)
        self._array = lib.llama_token_data_array(self._data, n, -1, False)

    def allowed(self, logits: np.ndarray) -> np.ndarray:
        view = self._view.reshape(-1, 3)
        view[:, 0] = self._ids.view(np.float32)  # the id field, bit for bit
        view[:, 1] = logits
        self._array.size, self._array.selected, self._array.sorted = len(self._ids), -1, False
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(self._array))
        out = np.zeros(len(self._ids), bool)
        kept = view[: self._array.size]
        out[kept[:, 0].view(np.int32)[np.isfinite(kept[:, 1])]] = True
        return out

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._sampler, int(token))

    def close(self) -> None:
        if getattr(self, "_sampler", None):
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None
