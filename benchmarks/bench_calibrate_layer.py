"""GPTQ calibration at MiMo-Embodied-7B's size, one decoder layer timed step by step, against this machine's GEMM rate.

The default build calibrates 36 such layers: for each, every calibration sequence runs through the layer with the
statistics hooks (XᵀX in float32), GPTQ quantizes its seven linears, and the quantized layer runs again to feed the
next. This times those three steps on layer 0 of a `make-tiny --preset full` checkpoint with the default calibration
set's real token counts (64 sequences, the same chat-templated samples a build uses; the hidden states are random
of the right shape — the time does not depend on their values), times the vision tower on a few of the calibration
images, measures the fp32 GEMM rate of the same torch in the same run (a [tokens, 4096] × [4096, 11008] product), and
extrapolates the whole calibration: vision + 36 × (statistics pass + GPTQ + quantized pass).

Regenerate:  python benchmarks/bench_calibrate_layer.py --model /work/full-size/full \
                 --json benchmarks/results/full_size/calibrate_layer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def gemm_gflops(tokens: int, hidden: int, inter: int) -> float:
    import torch

    a, b = torch.randn(tokens, hidden), torch.randn(hidden, inter)
    a @ b  # warm-up
    _, s = _timed(lambda: [a @ b for _ in range(3)])
    return 3 * 2 * tokens * hidden * inter / s / 1e9


def layer_flops(text, lengths: list[int]) -> float:
    """Multiply-adds × 2 of one decoder layer's forward over the sequences: the seven linears and attention."""
    h, i, hd = text.hidden, text.intermediate, text.head_dim
    linear = 2 * h * (h + 2 * text.kv_heads * hd) + 2 * h * h + 2 * 3 * h * i  # qkv, o, gate/up/down per token
    return sum(linear * L + 2 * 2 * L * L * h for L in lengths)


def main() -> None:
    import torch

    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.calibrate import AWQ_TOKENS, QuantConfig, quantize_layer
    from edgekit.quant.layer_stats import collect_stats
    from edgekit.quant.layers import calibration_sequences, decoder_layer, hf_config, layer0_inputs, rotary, run_layer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a make-tiny --preset full checkpoint")
    ap.add_argument("--n", type=int, default=64, help="calibration sequences (the build's default)")
    ap.add_argument("--vision-images", type=int, default=4, help="calibration images the vision tower is timed on")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    ck = open_checkpoint(args.model)
    cfg = QuantConfig(method="gptq", grid="gguf:q4_k", n_samples=args.n)
    (seqs, _), t_seqs = _timed(
        lambda: calibration_sequences(args.model, cfg.samples, cfg.n_samples, cfg.seed, cfg.resize_to)
    )
    lengths = [len(s.input_ids) for s in seqs]
    with_images = [s for s in seqs if len(s.grid_thw)]
    hf_cfg = hf_config(args.model)
    _, t_vision_some = _timed(lambda: layer0_inputs(ck, with_images[: args.vision_images], hf_cfg))
    t_vision = t_vision_some / max(1, min(args.vision_images, len(with_images))) * len(with_images)
    gen = torch.Generator().manual_seed(0)
    hidden = [torch.randn(1, L, ck.text.hidden, generator=gen) * 0.05 for L in lengths]
    rope = rotary(hf_cfg)
    layer, t_load = _timed(lambda: decoder_layer(ck, hf_cfg, 0))
    stats, t_stats = _timed(lambda: collect_stats(layer, rope, hidden, seqs, AWQ_TOKENS, 0))
    (_, _, _, _, new_state), t_gptq = _timed(lambda: quantize_layer(layer, stats, cfg, "model.layers.0.", 0))
    state = layer.state_dict()
    state.update(new_state)
    layer.load_state_dict(state)
    _, t_forward = _timed(lambda: run_layer(layer, rope, hidden, seqs))
    rate = gemm_gflops(min(sum(lengths), 8192), ck.text.hidden, ck.text.intermediate)
    flops = layer_flops(ck.text, lengths)
    per_layer = t_load + t_stats + t_gptq + t_forward
    total = t_seqs + t_vision + ck.text.num_layers * per_layer
    row = {
        "threads": torch.get_num_threads(),
        "sequences": len(seqs),
        "tokens": sum(lengths),
        "images": len(with_images),
        "gemm_gflops_fp32": round(rate, 1),
        "layer_forward_gflop": round(flops / 1e9, 1),
        "seconds": {
            "sequences": round(t_seqs, 1),
            "vision_all_images": round(t_vision, 1),
            "layer_load": round(t_load, 1),
            "stats_pass": round(t_stats, 1),
            "gptq_7_linears": round(t_gptq, 1),
            "quantized_pass": round(t_forward, 1),
            "per_layer": round(per_layer, 1),
        },
        "quantized_pass_share_of_gemm_rate": round(flops / t_forward / 1e9 / rate, 3),
        "stats_pass_share_of_gemm_rate": round(flops / t_stats / 1e9 / rate, 3),
        "estimated_calibration_minutes": round(total / 60, 1),
        "layers": ck.text.num_layers,
    }
    print(json.dumps(row, indent=1))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
