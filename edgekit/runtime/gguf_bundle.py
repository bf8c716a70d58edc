"""What both bundle pipelines (ONNX vision, or mmproj through libmtmd) check and choose before they load anything."""

from __future__ import annotations

from pathlib import Path

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
