"""What both bundle pipelines (ONNX vision, or mmproj through libmtmd) check and choose before they load anything."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

from edgekit.bundle.manifest import OpenedBundle, open_verified
from edgekit.errors import EdgekitError


def open_gguf_bundle(bundle: Path) -> OpenedBundle:
    """A bundle that verifies (seal, paths, ranges, hashes) and whose decoder llama.cpp runs here, its artifacts held
    open as they were hashed (load through `opened.path(rel)` / `opened.read(rel)`)."""
    opened = open_verified(bundle)
    parts = opened.manifest["parts"]
    if "decoder" not in parts or parts["decoder"]["format"] != "gguf":
        opened.close()
        raise EdgekitError(
            f"{bundle}: this bundle's decoder is {parts.get('decoder', {}).get('format')!r}; "
            "it runs on its device (see build-engines.sh), not through llama.cpp here"
        )
    return opened


def bundle_prompt_assets(opened: OpenedBundle):
    """PromptAssets from the bundle's tokenizer folder, each file read through its verified descriptor."""
    from edgekit.model.prompt_assets import PromptAssets
    from edgekit.model.tokenizer_file import MAX_TOKENIZER_BYTES

    folder = opened.manifest["tokenizer_dir"]

    def read(name: str) -> bytes | None:
        rel = f"{folder}/{name}"
        return opened.read(rel, max_bytes=MAX_TOKENIZER_BYTES) if opened.has(rel) else None

    return PromptAssets.from_files(read, opened.root / folder)


def thread_settings(manifest: dict, n_threads: int | None):
    """Threads as asked, else as `edgekit profile --tune` measured them for this bundle here, else every core; the
    measured OpenMP wait policy is applied when llama.cpp has not loaded yet. Returns (settings, applied)."""
    from edgekit.cores import available_cores
    from edgekit.runtime.settings import ThreadSettings, apply_wait_policy, check_threads, lookup

    check_threads(n_threads)

    settings = (
        ThreadSettings(n_threads)
        if n_threads
        else lookup(manifest["seal"]["sha256"]) or ThreadSettings(available_cores())
    )
    return settings, apply_wait_policy(settings)


def collect_answer(decoder, tokens: Iterator[int], on_text: Callable[[str], None] | None):
    """Run a greedy token stream to its end, passing each token's text to on_text. Returns (ids, text, time of the
    first token or None, time of the end): both pipelines' decode loop and its timing."""
    ids: list[int] = []
    t_first = None
    for token in tokens:
        if t_first is None:
            t_first = time.perf_counter()
        ids.append(token)
        if on_text:
            on_text(decoder.token_bytes(token).decode("utf-8", errors="replace"))
    text = b"".join(decoder.token_bytes(t) for t in ids).decode("utf-8", errors="replace")
    return ids, text, t_first, time.perf_counter()
