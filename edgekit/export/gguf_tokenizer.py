"""The tokenizer section of a decoder GGUF: vocabulary, token types, merges and special ids as llama.cpp's
"gpt2" (byte-level BPE) tokenizer with pre-tokenizer "qwen2" reads them, all from the checkpoint's files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.json_files import read_json_object

# Token types as llama.cpp's vocabulary stores them (gguf.TokenType).
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class TokenizerMeta:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    chat_template: str | None


def _merge_strings(merges: list, where: str) -> list[str]:
    """tokenizers writes merges as "a b" strings or as [a, b] pairs; GGUF stores "a b"."""
    out = []
    for m in merges:
        if isinstance(m, str):
            out.append(m)
            continue
        a, b = m
        if " " in a or " " in b:
            raise EdgekitError(f"{where}: merge {m!r} contains a space, which GGUF's 'a b' merge format cannot hold")
        out.append(f"{a} {b}")
    return out


def tokenizer_metadata(ckpt) -> TokenizerMeta:
    """Vocabulary, token types and merges as llama.cpp's "gpt2" tokenizer reads them.

    The table has config.json's vocab_size entries (the embedding rows); ids the tokenizer does
    not use are "[PAD<id>]" UNUSED entries, as llama.cpp's converter writes them.
    """
    where = str(ckpt.tokenizer_json)
    tok = read_json_object(Path(ckpt.tokenizer_json))
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise EdgekitError(
            f"{where}: model.type is {model.get('type')!r}; edgekit writes byte-level BPE tokenizers only"
        )
    by_id: dict[int, tuple[str, int]] = {int(i): (t, TOKEN_NORMAL) for t, i in model["vocab"].items()}
    for added in tok.get("added_tokens", []):
        kind = TOKEN_CONTROL if added.get("special", False) else TOKEN_USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    n_vocab = ckpt.text.vocab
    if max(by_id) >= n_vocab:
        raise EdgekitError(f"{where}: token id {max(by_id)} does not fit config.json vocab_size {n_vocab}")
    tokens, types = [], []
    for i in range(n_vocab):
        text, kind = by_id.get(i, (f"[PAD{i}]", TOKEN_UNUSED))
        tokens.append(text)
        types.append(kind)

    gen = ckpt.generation_config or {}

    def first(x):
        return x[0] if isinstance(x, list) and x else x

    eos = first(ckpt.config.get("eos_token_id", gen.get("eos_token_id")))
    bos = ckpt.token_ids.bos
    pad = first(gen.get("pad_token_id", ckpt.config.get("pad_token_id")))
    return TokenizerMeta(
        tokens, types, _merge_strings(model.get("merges", []), where), bos, eos, pad, ckpt.chat_template
    )


def add_tokenizer(writer, meta: TokenizerMeta) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(meta.tokens)
    writer.add_token_types(meta.token_types)
    writer.add_token_merges(meta.merges)
    if meta.bos_id is not None:
        writer.add_bos_token_id(int(meta.bos_id))
    if meta.eos_id is not None:
        writer.add_eos_token_id(int(meta.eos_id))
    if meta.pad_id is not None:
        writer.add_pad_token_id(int(meta.pad_id))
    writer.add_add_bos_token(False)  # Qwen prompts start with <|im_start|>, never with a BOS
    if meta.chat_template:
        writer.add_chat_template(meta.chat_template)
