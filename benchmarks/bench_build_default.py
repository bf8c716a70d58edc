"""The default `edgekit build --precision int4` before (RTN) and after (GPTQ, calibrated by default): build time,
rebuild time with a warm calibration cache, and held-out KL(FP‖bundle) measured inside llama.cpp.

    python benchmarks/bench_build_default.py [--preset small] [--eval 8] [--work DIR]

KL is the mean per-token KL of each bundle's decoder.gguf against an f32 GGUF of the same checkpoint, on the
built-in samples' eval split teacher-forced through llama.cpp with the PyTorch tower's image embeddings
(edgekit.bench.gguf_fidelity). Those eval samples come from the same generator as the calibration split;
issue #16 measures on prompts unlike the calibration set.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    from edgekit.bench.gguf_fidelity import gguf_logits, heldout_prompts, kl_table
    from edgekit.bundle.build import BuildConfig, build_bundle
    from edgekit.export.gguf import write_decoder_gguf
    from edgekit.model.fixtures import make_tiny

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--eval", type=int, default=8, help="held-out samples")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-build-default-"))
    ckpt = work / f"ckpt-{args.preset}"
    if not (ckpt / "config.json").is_file():
        make_tiny(ckpt, args.preset)
    cache = work / "calib-cache"
    rows = {}
    for name, method, out in (
        ("rtn (old default)", "rtn", "rtn"),
        ("gptq (new default), cold cache", None, "gptq"),
        ("gptq (new default), warm cache", None, "gptq-rebuild"),
    ):
        cfg = BuildConfig(target="cpu", precision="int4", method=method)
        bundle, seconds = timed(lambda: build_bundle(ckpt, work / out, cfg, calib_cache=cache))
        rows[name] = {"bundle": bundle, "seconds": seconds}
    f32 = write_decoder_gguf(ckpt, work / "f32.gguf", "gguf:f32")
    prompts = heldout_prompts(ckpt, "driving,embodied", args.eval)
    ref = gguf_logits(f32, prompts)
    kl = kl_table(
        ref, {name: gguf_logits(r["bundle"] / "decoder" / "decoder.gguf", prompts) for name, r in rows.items()}
    )
    base = kl["rtn (old default)"]
    print(f"preset {args.preset}, cpu int4, {args.eval} held-out samples, {os.cpu_count()} cores; work {work}")
    print(f"{'build':34s} {'seconds':>8s} {'KL(FP||Q)':>10s} {'vs rtn':>7s}")
    for name, r in rows.items():
        print(f"{name:34s} {r['seconds']:8.1f} {kl[name]:10.5f} {kl[name] / base:7.2f}")
    print(json.dumps({n: {"seconds": r["seconds"], "kl": kl[n]} for n, r in rows.items()}, sort_keys=True))


if __name__ == "__main__":
    main()
