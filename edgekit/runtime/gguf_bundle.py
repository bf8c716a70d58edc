"""What both bundle pipelines (ONNX vision, or mmproj through libmtmd) check and choose before they load anything."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

from edgekit.bundle.manifest import verify_bundle
from edgekit.errors import EdgekitError


def verified_gguf_manifest(bundle: Path) -> dict:
    """The manifest of a bundle that verifies (seal, paths, hashes) and whose decoder llama.cpp runs here."""
    report = verify_bundle(bundle, deep=False)
    if not report.ok:
        raise EdgekitError(f"{bundle}: bundle does not verify: {report.errors[0]}")
    parts = report.manifest["parts"]
    if "decoder" not in parts or parts["decoder"]["format"] != "gguf":
        raise EdgekitError(f"{bundle}: this bundle's decoder is {parts.get('decoder', {}).get('format')!r}; "
                           "it runs on its device (see build-engines.sh), not through llama.cpp here")
    return report.manifest


def thread_settings(manifest: dict, n_threads: int | None):
    """Threads as asked, else as `edgekit profile --tune` measured them for this bundle here, else every core; the
    measured OpenMP wait policy is applied when llama.cpp has not loaded yet. Returns (settings, applied)."""
    from edgekit.runtime.settings import ThreadSettings, apply_wait_policy, available_cores, lookup

    settings = (ThreadSettings(n_threads) if n_threads else lookup(manifest["seal"]["sha256"])
                or ThreadSettings(available_cores()))
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
