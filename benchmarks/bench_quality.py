"""Quality per bit off the calibration distribution: edgekit's int4 GGUFs against llama.cpp's own quantizer.

Every decoder comes from one generated checkpoint and is measured inside llama.cpp, as the mean per-token
KL(FP‖Q) against the f32 GGUF over the held-out set (edgekit/data/heldout: prompts and images unlike every
calibration source; text-only and image+text, the images' embeddings from the PyTorch vision tower):
- edgekit Q4_K by RTN, AWQ and GPTQ (and the tuning variants asked for), calibrated on the default mix
  (data/calibration_mix.py: the real samples' calibration split when present, built-in samples, generic text);
  with --fp4, edgekit NVFP4 and MXFP4 (llama.cpp's FP4 block types, 4.5 and 4.25 bits per weight) by RTN and GPTQ;
- llama.cpp's anchors, made by its own programs (scripts/build_llama_tools.sh: llama-imatrix, llama-quantize
  built from the pinned source): Q4_K_M without an importance matrix, Q4_K_M with one, and pure Q4_K (every
  tensor Q4_K, the same file size as edgekit's Q4_K) with one. The importance matrix is computed on the same
  calibration sequences as edgekit's, as text (llama-imatrix reads no images; image tokens are dropped). With
  --fp4 also pure MXFP4 (llama-quantize MXFP4_MOE --pure: every matrix MXFP4). llama-quantize has no NVFP4 file
  type in the pinned version ("invalid output file type 39"): llama.cpp's own NVFP4 is its `quantize_nvfp4`
  (ggml_quantize_chunk), whose bytes edgekit's NVFP4 RTN is (tests/quant/test_fp4.py), so "edgekit nvfp4 rtn" is
  that anchor's row.

Regenerate:  python benchmarks/bench_quality.py --preset small [--fp4]
             python benchmarks/bench_quality.py --preset medium
             python benchmarks/bench_quality.py --checkpoint CKPT   (any checkpoint, e.g. one from edgekit train-toy)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llama_tools  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# name -> QuantizeConfig fields beyond the method; the tuning variants are measured with --variants
VARIANTS = {
    "rtn": {"method": "rtn"},
    "awq": {"method": "awq"},
    "gptq": {"method": "gptq"},
    "gptq unweighted fit": {"method": "gptq", "weighted_fit": False},
    "gptq act-order": {"method": "gptq", "act_order": True},
    "gptq damp 0.1": {"method": "gptq", "damp": 0.1},
    "gptq n=128": {"method": "gptq", "n_samples": 128},
    "gptq built-in samples only": {"method": "gptq", "samples": "driving,embodied"},
    "gptq lm_head q6_k": {"method": "gptq", "lm_head": "gguf:q6_k"},
    "nvfp4 rtn": {"method": "rtn", "format": "gguf:nvfp4"},
    "nvfp4 gptq": {"method": "gptq", "format": "gguf:nvfp4"},
    "mxfp4 rtn": {"method": "rtn", "format": "gguf:mxfp4"},
    "mxfp4 gptq": {"method": "gptq", "format": "gguf:mxfp4"},
}
DEFAULT_VARIANTS = "rtn,awq,gptq"
FP4_VARIANTS = "nvfp4 rtn,nvfp4 gptq,mxfp4 rtn,mxfp4 gptq"


def edgekit_gguf(ckpt: Path, work: Path, name: str, n: int) -> Path:
    from edgekit.quant.formats import parse
    from edgekit.bundle.quantize import QuantizeConfig, quantize

    opts = {"n_samples": n, "format": "gguf:q4_k", **VARIANTS[name]}
    for key in ("lm_head", "format"):
        if key in opts:
            opts[key] = parse(opts[key])
    out = work / f"edgekit-{name.replace(' ', '_').replace('=', '')}.gguf"
    if not out.is_file():
        quantize(ckpt, out, QuantizeConfig(evaluate=0, **opts), cache=work / "calib-cache")
    return out


def calibration_text(ckpt: Path, n: int, out: Path) -> Path:
    """The default calibration sequences as plain text (image placeholder tokens dropped), for llama-imatrix."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.prompt_assets import PromptAssets
    from edgekit.model.tokenizer_file import load_tokenizer
    from edgekit.quant.layers import calibration_sequences

    ck = open_checkpoint(ckpt)
    image_id = ck.token_ids.image
    tok = load_tokenizer(PromptAssets.from_checkpoint(ck).tokenizer_json)
    seqs, _ = calibration_sequences(ckpt, "default", n, 0, (224, 224))
    texts = [tok.decode([int(t) for t in s.input_ids if t != image_id], skip_special_tokens=False) for s in seqs]
    out.write_text("\n".join(texts), encoding="utf-8")
    return out


def anchors(f32: Path, text: Path, work: Path, fp4: bool = False) -> dict[str, Path]:
    imat = work / "imatrix.gguf"
    if not imat.is_file():
        llama_tools.imatrix(f32, text, imat)
    made = {}
    fp4_anchors = (("llama.cpp pure MXFP4", "MXFP4_MOE", False, True),) if fp4 else ()
    for name, ftype, use_imatrix, pure in (
        ("llama.cpp Q4_K_M, no imatrix", "Q4_K_M", False, False),
        ("llama.cpp Q4_K_M + imatrix", "Q4_K_M", True, False),
        ("llama.cpp pure Q4_K + imatrix", "Q4_K_M", True, True),
        *fp4_anchors,
    ):
        out = work / ("llama-" + name.split(" ", 1)[1].replace(" ", "_").replace("+", "").replace(",", "") + ".gguf")
        if not out.is_file():
            llama_tools.quantize(f32, out, ftype, imat if use_imatrix else None, pure)
        made[name] = out
    return made


def kl_by_part(ref: list[np.ndarray], path: Path, prompts, parts: dict[str, list[int]]) -> dict[str, float]:
    """Mean per-token KL over every position of the prompts in each part (streamed: one variant's logits at a time)."""
    from edgekit.bench.gguf_fidelity import gguf_logits
    from edgekit.metrics import token_kl

    per_prompt = [token_kl(r, q) for r, q in zip(ref, gguf_logits(path, prompts))]
    return {part: float(np.concatenate([per_prompt[i] for i in idx]).mean()) for part, idx in parts.items()}


def checkpoint_and_reference(work: Path, preset: str, given: Path | None = None) -> tuple[Path, Path]:
    """The checkpoint (`given`, else the preset's generated one under `work`) and its decoder as an f32 GGUF under
    `work` (made once, kept)."""
    from edgekit.export.gguf import write_decoder_gguf
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.fixtures import make_tiny

    work.mkdir(parents=True, exist_ok=True)
    ckpt, f32 = given or work / "checkpoint", work / "f32.gguf"
    if given is not None:
        open_checkpoint(given)  # one line if it is not a checkpoint, before anything is made from it
    elif not (ckpt / "config.json").is_file():
        make_tiny(ckpt, preset)
    if not f32.is_file():
        write_decoder_gguf(ckpt, f32, "gguf:f32")
    return ckpt, f32


def heldout_parts(items) -> dict[str, list[int]]:
    """Indices of the held-out items in each reported part: all, text, image+text, driving, embodied."""
    return {
        "all": list(range(len(items))),
        "text": [i for i, it in enumerate(items) if it.image is None],
        "image+text": [i for i, it in enumerate(items) if it.image is not None],
        "driving": [i for i, it in enumerate(items) if it.domain == "driving"],
        "embodied": [i for i, it in enumerate(items) if it.domain == "embodied"],
    }


def heldout_kl(ckpt: Path, f32: Path, files: dict[str, Path], items) -> tuple[dict[str, dict[str, float]], int]:
    """Per decoder file, the mean per-token KL against the f32 GGUF on the held-out items, by part; and the number
    of positions measured."""
    from edgekit.bench.gguf_fidelity import gguf_logits, heldout_set_prompts

    prompts = heldout_set_prompts(ckpt, items)
    ref = gguf_logits(f32, prompts)
    kl = {name: kl_by_part(ref, path, prompts, heldout_parts(items)) for name, path in files.items()}
    return kl, sum(len(p[0]) for p in prompts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="measure this checkpoint (e.g. a trained one) instead of the "
        "preset's random-weight one; results under --work/<folder name>",
    )
    ap.add_argument("--n", type=int, default=64, help="calibration sequences (edgekit and llama-imatrix alike)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--fp4", action="store_true", help=f"also {FP4_VARIANTS} and llama.cpp's pure MXFP4")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_quality")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from edgekit.data.calibration_mix import real_samples_files
    from edgekit.data.heldout import load_heldout

    work = args.work / (args.checkpoint.resolve().name if args.checkpoint else args.preset)
    ckpt, f32 = checkpoint_and_reference(work, args.preset, args.checkpoint)
    t0 = time.perf_counter()
    variants = args.variants.split(",") + (FP4_VARIANTS.split(",") if args.fp4 else [])
    files = {f"edgekit {v}": edgekit_gguf(ckpt, work, v, args.n) for v in variants}
    files |= anchors(f32, calibration_text(ckpt, args.n, work / "calibration.txt"), work, args.fp4)
    items = load_heldout()
    kl, positions = heldout_kl(ckpt, f32, files, items)
    parts = heldout_parts(items)
    size = {name: path.stat().st_size for name, path in files.items()}
    base = "edgekit rtn" if "edgekit rtn" in kl else next(iter(kl))
    anchor = "llama.cpp pure Q4_K + imatrix"
    measured = f"checkpoint {args.checkpoint}" if args.checkpoint else f"preset {args.preset}"
    print(
        f"\n{measured}; {len(items)} held-out prompts ({len(parts['text'])} text, {len(parts['image+text'])} "
        f"image+text, {positions} positions); calibration {args.n} sequences, real samples "
        f"{'present' if real_samples_files() else 'absent'}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {time.perf_counter() - t0:.0f} s\n"
    )
    print(
        "| decoder | KL all | text | image+text | driving | embodied | vs edgekit RTN | vs imatrix Q4_K | file size |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in files:
        k = kl[name]
        print(
            f"| {name} | {k['all']:.4f} | {k['text']:.4f} | {k['image+text']:.4f} | {k['driving']:.4f} | "
            f"{k['embodied']:.4f} | {k['all'] / kl[base]['all']:.2f} | {k['all'] / kl[anchor]['all']:.2f} | "
            f"{size[name] / size[base]:.2f} |"
        )
    if args.json:
        record = {"preset": args.preset, "checkpoint": str(args.checkpoint or ""), "n": args.n, "kl": kl, "bytes": size}
        args.json.write_text(json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
