"""What the benchmark compares: the reference checkpoint and the variants named on the command line.

A VARIANT is a bundle directory whose decoder runs here (GGUF through llama.cpp, ONNX vision through ONNX Runtime),
or the reference itself (`reference`, or the reference's own path): benchmarking the reference against itself is
the harness's soundness check (agreement 1, KL 0). Everything is checked before any model loads: bundles verify
(seal and hashes), were built from a model with the reference's dimensions and tokenizer, and the whole set fits
in this machine's memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

REFERENCE_WORD = "reference"
WORKER_OVERHEAD_GB = 0.6  # a Python process with torch / onnxruntime / llama.cpp imported, before any weights


@dataclass(frozen=True)
class InputSpec:
    """How a variant sees a frame: the image size its vision takes (None: the processor's own resize per image) and
    how many cameras its graph was built for."""

    resolution: tuple[int, int] | None  # (width, height)
    cameras: int

    def describe(self) -> str:
        size = f"{self.resolution[0]}x{self.resolution[1]}" if self.resolution else "processor resize"
        return f"{size}, {self.cameras} camera{'s' if self.cameras > 1 else ''}"


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "reference" | "bundle"
    path: Path
    inputs: InputSpec
    precision: str  # what the report shows: "fp32 reference", "q4_k gptq + fp32 vision", ...
    weight_bytes: int  # bytes of the files it loads (memory estimate)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_variant(reference: Path, *, dtype: str, inputs: InputSpec, name: str = REFERENCE_WORD) -> Variant:
    from edgekit.model.checkpoint import open_checkpoint

    ck = open_checkpoint(reference)
    params = ck.parameter_counts()["total"]
    return Variant(name, "reference", ck.path, inputs, f"{dtype} reference", params * (4 if dtype == "float32" else 2))


def bundle_variant(path: Path, reference: Path, name: str, *, allow_different_source: bool = False) -> Variant:
    """A bundle that verifies, runs here, and was built from the reference's weights (its manifest records their
    content hash; a QAT bundle, the hash of the checkpoint it was trained from), architecture and tokenizer."""
    from edgekit.bundle.manifest import verify_bundle
    from edgekit.model.checkpoint import open_checkpoint

    report = verify_bundle(path, deep=False)
    if not report.ok:
        raise EdgekitError(f"{path}: bundle does not verify: {report.errors[0]}")
    m = report.manifest
    decoder, vision = m["parts"].get("decoder", {}), m["parts"].get("vision", {})
    if decoder.get("format") != "gguf" or vision.get("format") != "onnx":
        raise EdgekitError(
            f"{path}: its decoder is {decoder.get('format')!r}; `edgekit bench` runs bundles whose "
            "decoder is GGUF (llama.cpp) and vision ONNX here (build with --backend gguf)"
        )
    ck = open_checkpoint(reference)
    text = m["model"].get("text", {})
    ours = {"hidden": ck.text.hidden, "num_layers": ck.text.num_layers, "vocab": ck.text.vocab}
    theirs = {k: text.get(k) for k in ours}
    if ours != theirs:
        raise EdgekitError(
            f"{path}: built from a model with {theirs}, but the reference {reference} has {ours}; "
            "benchmark a bundle against the checkpoint it was built from"
        )
    tokenizer = path / m["tokenizer_dir"] / "tokenizer.json"
    if _sha256(tokenizer) != _sha256(Path(ck.tokenizer_json)):
        raise EdgekitError(
            f"{path}: its tokenizer differs from the reference's ({ck.tokenizer_json}); "
            "benchmark a bundle against the checkpoint it was built from"
        )
    source = m.get("source") if isinstance(m.get("source"), dict) else {}
    built_from = {source.get("content_hash"), source.get("trained_from")} - {None}
    if not allow_different_source and ck.content_hash not in built_from:
        raise EdgekitError(
            f"{path}: was built from other weights than the reference {reference} (the manifest's "
            "source.content_hash differs); benchmark a bundle against the checkpoint it was built from, "
            "or pass --allow-different-source"
        )
    w, h = vision["resolution"]
    inputs = InputSpec((int(w), int(h)), int(vision.get("images", 1)))
    size = sum(
        e["size"] for rel, e in m["artifacts"].items() if rel.endswith((".gguf", ".onnx")) and "mmproj" not in rel
    )
    method = f" {decoder['method']}" if decoder.get("method") not in (None, "none") else ""
    return Variant(
        name, "bundle", path, inputs, f"{decoder.get('precision')}{method} + {vision.get('precision')} vision", size
    )


def resolve_variants(
    specs: list[str], reference: Path, *, dtype: str, allow_different_source: bool = False
) -> list[Variant]:
    """Variants in command-line order, with unique names; a reference variant sees what the first bundle sees."""
    if not specs:
        raise EdgekitError("give at least one VARIANT: a bundle directory, or 'reference'")
    reference = Path(reference)
    bundles, names = {}, []
    for spec in specs:
        path = Path(spec)
        if spec == REFERENCE_WORD or (path.exists() and path.resolve() == reference.resolve()):
            continue
        if not path.is_dir():
            raise EdgekitError(
                f"{spec}: no such bundle directory (a VARIANT is a bundle directory or '{REFERENCE_WORD}')"
            )
        bundles[spec] = bundle_variant(
            path, reference, _unique(path.resolve().name, names), allow_different_source=allow_different_source
        )
    first = next(iter(bundles.values()), None)
    inputs = first.inputs if first else InputSpec(None, 1)
    out = []
    for spec in specs:
        out.append(
            bundles[spec]
            if spec in bundles
            else reference_variant(reference, dtype=dtype, inputs=inputs, name=_unique("reference (as variant)", names))
        )
    return out


def _unique(name: str, taken: list[str]) -> str:
    candidate, i = name, 2
    while candidate in taken:
        candidate, i = f"{name} ({i})", i + 1
    taken.append(candidate)
    return candidate


def check_memory(variants: list[Variant], reference_bytes: int) -> dict:
    """Every worker stays loaded for the whole run: refuse a set that cannot fit in available memory."""
    import psutil

    need = (reference_bytes + sum(v.weight_bytes for v in variants)) / 1e9 + WORKER_OVERHEAD_GB * (len(variants) + 1)
    available = psutil.virtual_memory().available / 1e9
    if need > available:
        raise EdgekitError(
            f"the reference and {len(variants)} variant(s) need about {need:.1f} GB loaded together, "
            f"but {available:.1f} GB is available; benchmark fewer variants per run, or use "
            "--reference-dtype bfloat16"
        )
    return {"estimated_gb": round(need, 2), "available_gb": round(available, 2)}
