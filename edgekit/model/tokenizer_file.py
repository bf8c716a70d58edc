"""A checkpoint's or bundle's tokenizer.json, read once: a regular file of bounded size, validated as JSON (no
duplicate keys, bounded depth) before the tokenizers library parses it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from edgekit.errors import EdgekitError

MAX_TOKENIZER_BYTES = 64 << 20


@lru_cache(maxsize=4)
def load_tokenizer(tokenizer_json: str | Path):
    from edgekit.safe_files import read_regular

    path = Path(tokenizer_json)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise EdgekitError(f"{path}: tokenizer.json not found; the checkpoint directory must contain it")
    return tokenizer_from_bytes(read_regular(path, max_bytes=MAX_TOKENIZER_BYTES), path)


def tokenizer_from_bytes(data: bytes, where: Path):
    """A tokenizers.Tokenizer from tokenizer.json's bytes (validated as JSON first: no duplicate keys, bounded depth)."""
    from tokenizers import Tokenizer

    from edgekit.json_files import parse_json

    parse_json(data, str(where))
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # the Rust library raises plain Exception on a malformed file
        raise EdgekitError(f"{where}: cannot be read as a tokenizers file ({str(e).splitlines()[0][:200]})") from None
