"""Quality of the TensorRT formats (ModelOpt unified checkpoints) on the held-out set, side by side in one run.

TensorRT does not run here and Edge-LLM's ONNX needs its TensorRT plugins, so the runtime these decoders are measured
in is transformers with each format's exact arithmetic: every quantized linear's weight is what its unified
checkpoint dequantizes to (tests/export/test_modelopt_unified.py pins that bit for bit), and where the format
quantizes activations (W8A8 INT8, FP8, NVFP4 W4A4) the linear's input goes through the same quantization under the
calibrated input scale (edgekit.quant.formats.Format.activation_qdq; float32 math, where TensorRT computes in
float16). The measure is bench_quality's: mean per-token KL(FP‖Q) against the full-precision model over every
position of the held-out prompts (edgekit/data/heldout: text-only and image+text, unlike every calibration source),
and top-1 agreement. Every decoder is calibrated on the same sequences (the default mix, --n of them).

With --qat FORMAT, also `edgekit qat --init rtn` on that format at its defaults (from GPTQ, phase 1 moves no FP4 code
and the E4M3 block scales move less than one step: README), twice: trained with the activations quantized as the
runtime quantizes them (the default) and with them float (--float-activations), each measured the
same way (its trained codes, its init's input scales).

Regenerate:  python benchmarks/bench_unified_quality.py --preset small --json benchmarks/results/quality/unified_small.json
             python benchmarks/bench_unified_quality.py --preset small --qat nvidia:nvfp4 \
                 --variants "nvidia:nvfp4 rtn (NVFP4 W4A4),nvidia:nvfp4 gptq (NVFP4 W4A4)" \
                 --json benchmarks/results/quality/unified_small_qat_nvfp4.json
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
from bench_quality import heldout_parts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# row -> (QuantConfig fields, activations quantized); the build precision each is: w8a8 (tensorrt), fp8, nvfp4, int4
# (tensorrt). The weights-only rows split a W8A8/W4A4 format's loss between its weights and its activations;
# smoothquant onto FP8/NVFP4 is SmoothQuant's migration (alpha 0.5) and then GPTQ.
VARIANTS = {
    "int8:channel smoothquant (W8A8)": ({"method": "smoothquant", "grid": "int8:channel"}, True),
    "nvidia:fp8 rtn (FP8)": ({"method": "rtn", "grid": "nvidia:fp8"}, True),
    "nvidia:fp8 gptq (FP8)": ({"method": "gptq", "grid": "nvidia:fp8"}, True),
    "nvidia:fp8 smoothquant (FP8; the build's default)": ({"method": "smoothquant", "grid": "nvidia:fp8"}, True),
    "nvidia:fp8 gptq (weights only)": ({"method": "gptq", "grid": "nvidia:fp8"}, False),
    "nvidia:fp8 awq (FP8)": ({"method": "awq", "grid": "nvidia:fp8"}, True),
    "nvidia:w4a16 rtn (W4A16_AWQ g128)": ({"method": "rtn", "grid": "nvidia:w4a16"}, False),
    "nvidia:w4a16 awq (W4A16_AWQ g128)": ({"method": "awq", "grid": "nvidia:w4a16"}, False),
    "nvidia:w4a16 gptq (W4A16_AWQ g128)": ({"method": "gptq", "grid": "nvidia:w4a16"}, False),
    "nvidia:nvfp4 rtn (NVFP4 W4A4)": ({"method": "rtn", "grid": "nvidia:nvfp4"}, True),
    "nvidia:nvfp4 gptq (NVFP4 W4A4)": ({"method": "gptq", "grid": "nvidia:nvfp4"}, True),
    "nvidia:nvfp4 smoothquant (NVFP4; the build's default)": ({"method": "smoothquant", "grid": "nvidia:nvfp4"}, True),
    "nvidia:nvfp4 gptq (weights only: W4A16_NVFP4)": ({"method": "gptq", "grid": "nvidia:nvfp4"}, False),
    "nvidia:nvfp4 awq (NVFP4 W4A4)": ({"method": "awq", "grid": "nvidia:nvfp4"}, True),
}


def qat_dir(ckpt: Path, work: Path, fmt: str, float_activations: bool) -> Path:
    """`edgekit qat --init rtn` on `fmt` at its defaults (made once, kept under `work`)."""
    from edgekit.qat.run import QATSettings, run_qat
    from edgekit.quant.formats import parse
    from edgekit.quant.trained import is_qat_dir

    out = work / f"qat-rtn-{fmt.replace(':', '_')}-{'float' if float_activations else 'quantized'}"
    if not is_qat_dir(out):
        run_qat(
            ckpt, out, QATSettings(parse(fmt), init="rtn", float_activations=float_activations), work / "calibration"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--checkpoint", type=Path, help="measure this checkpoint instead of the preset's generated one")
    ap.add_argument("--n", type=int, default=64, help="calibration sequences")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--qat", default="", help="also QAT from RTN on this format, activations quantized and float")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_unified_quality")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from edgekit.bench.gguf_fidelity import heldout_chat_sequences
    from edgekit.data.heldout import load_heldout
    from edgekit.metrics import token_kl
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.fixtures import make_tiny
    from edgekit.quant.calibrate import QuantConfig, calibrate
    from edgekit.quant.evaluate import apply_result, load_reference, sequence_logits

    torch.set_num_threads(os.cpu_count() or 1)
    work = args.work / (args.checkpoint.resolve().name if args.checkpoint else args.preset)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint or work / "checkpoint"
    if args.checkpoint is None and not (ckpt / "config.json").is_file():
        make_tiny(ckpt, args.preset)
    t0 = time.perf_counter()
    items = load_heldout()
    parts = heldout_parts(items)
    ck = open_checkpoint(ckpt)
    seqs, image_id = heldout_chat_sequences(ck, items), ck.token_ids.image
    model = load_reference(ckpt)
    reference = [x.numpy() for x in sequence_logits(model, seqs, image_id)]
    fp_state = {k: v.clone() for k, v in model.state_dict().items()}
    rows: dict[str, dict] = {}
    runs = [(name, *VARIANTS[name], ckpt) for name in args.variants.split(",")]
    for float_activations in (False, True) if args.qat else ():
        label = f"{args.qat} QAT from rtn ({'float' if float_activations else 'quantized'} activations in training)"
        runs.append(
            (label, {"method": "rtn", "grid": args.qat}, True, qat_dir(ckpt, work, args.qat, float_activations))
        )
    for name, fields, activations, source in runs:
        result = calibrate(source, QuantConfig(**fields, n_samples=args.n), work / "calibration")
        if not activations:
            result.input_scales.clear()  # no activation quantizers: the weights' share of the loss alone
        handles = apply_result(model, result)
        logits = [x.numpy() for x in sequence_logits(model, seqs, image_id)]
        for h in handles:
            h.remove()
        model.load_state_dict(fp_state)
        kl = [token_kl(r, q) for r, q in zip(reference, logits)]
        top1 = [r.argmax(-1) == q.argmax(-1) for r, q in zip(reference, logits)]
        rows[name] = {
            "kl": {part: float(np.concatenate([kl[i] for i in idx]).mean()) for part, idx in parts.items()},
            "top1": float(np.concatenate(top1).mean()),
            "activations_quantized": bool(result.input_scales),
        }
        print(f"{name}: KL {rows[name]['kl']['all']:.5f}", flush=True)
    positions = sum(len(s.input_ids) for s in seqs)
    measured = f"checkpoint {args.checkpoint}" if args.checkpoint else f"preset {args.preset}"
    print(
        f"\n{measured}; {len(items)} held-out prompts ({len(parts['text'])} text, {len(parts['image+text'])} "
        f"image+text, {positions} positions); calibration {args.n} sequences; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.perf_counter() - t0:.0f} s\n"
    )
    print("| decoder | activations | KL all | text | image+text | top-1 |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        k = r["kl"]
        print(
            f"| {name} | {'quantized' if r['activations_quantized'] else 'float'} | {k['all']:.4f} | {k['text']:.4f} "
            f"| {k['image+text']:.4f} | {r['top1']:.1%} |"
        )
    if args.json:
        record = {
            "preset": args.preset,
            "checkpoint": str(args.checkpoint or ""),
            "n": args.n,
            "rows": rows,
            "positions": positions,
        }
        args.json.write_text(json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
