"""GGUF export and llama.cpp decode speed against the memory-bandwidth roofline.

For each precision (f16, q8_0, q4_k by default) on a generated checkpoint (medium by default):
- export: wall time and peak RSS of `write_decoder_gguf`, in a fresh subprocess each;
- streaming: peak RSS of the same export on a copy of the checkpoint with fewer decoder layers
  (if export streams, the peaks match: memory does not grow with the number of layers);
- decode: greedy tokens/s through llama.cpp (edgekit.runtime.llama_decoder) after a short prompt;
- roofline: this machine's measured read bandwidth (edgekit.bench.roofline: a multi-threaded reduction
  over 1 GiB, same thread count as the decoder) divided by the bytes one decoded token reads (every
  weight once, one embedding row, the f16 KV cache).

Regenerate:  python benchmarks/bench_gguf.py --preset medium --json bench_gguf.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.bench.roofline import gguf_bytes_per_token, read_bandwidth_fresh

# Peak RSS is read from /proc/self/status VmHWM: getrusage's ru_maxrss survives fork + exec on Linux
# and would report the parent's peak (the checkpoint generator) instead of the export's.
PEAK_RSS = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"

EXPORT_CHILD = (
    r"""
import json, sys, time
from edgekit.export.gguf import write_decoder_gguf
t = time.perf_counter()
write_decoder_gguf(sys.argv[1], sys.argv[2], sys.argv[3])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": %s}))
"""
    % PEAK_RSS
)

BASELINE_CHILD = (
    r"""
import json
import torch, numpy, gguf, safetensors  # what the export imports, without exporting
import edgekit.export.gguf, edgekit.quant.grids, edgekit.export.gguf_blocks, edgekit.model.checkpoint
print(json.dumps({"peak_rss_mb": %s}))
"""
    % PEAK_RSS
)


# Decode speed and bandwidth run in fresh processes too: torch's and llama.cpp's OpenMP thread pools
# in one process compete for the same two cores and distort both numbers.
BENCH_DIR = str(Path(__file__).resolve().parent)
SPEED_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from bench_gguf import decode_speed
print(json.dumps({"tokens_per_s": decode_speed(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))}))
"""


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_checkpoint(workdir: Path, preset: str, layers: int | None) -> Path:
    """A generated checkpoint; `layers` overrides the preset's decoder depth (for the streaming check)."""
    from edgekit.model import fixtures

    name = preset if layers is None else f"{preset}-{layers}l"
    out = workdir / name
    if (out / "config.json").is_file():
        return out
    if layers is not None:
        fixtures.PRESETS[name] = dataclasses.replace(fixtures.PRESETS[preset], text_layers=layers)
    return fixtures.make_tiny(out, name, seed=0)


def decode_speed(gguf_path: Path, n_prompt: int, n_tokens: int, n_threads: int) -> float:
    from edgekit.runtime.llama_decoder import LlamaDecoder

    rng = np.random.default_rng(0)
    with LlamaDecoder(gguf_path, n_ctx=n_prompt + n_tokens + 8, n_threads=n_threads) as dec:
        prompt = rng.integers(0, min(dec.n_vocab, 4000), n_prompt).tolist()
        last = dec.prefill(prompt)[-1]
        t = time.perf_counter()
        for _ in range(n_tokens):  # fixed length: end-of-generation tokens do not stop a benchmark
            last = dec.step(int(np.argmax(last)))
        return n_tokens / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--precisions", default="f16,q8_0,q4_k")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "edgekit-bench-gguf")
    ap.add_argument("--few-layers", type=int, default=2, help="decoder depth of the streaming comparison checkpoint")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    full = make_checkpoint(args.workdir, args.preset, None)
    few = make_checkpoint(args.workdir, args.preset, args.few_layers)
    layers = json.loads((full / "config.json").read_text())["num_hidden_layers"]
    bandwidth = read_bandwidth_fresh(args.threads)
    baseline = run_child(BASELINE_CHILD)["peak_rss_mb"]
    rows = []
    for precision in args.precisions.split(","):
        out = args.workdir / f"{args.preset}-{precision}.gguf"
        exp = run_child(EXPORT_CHILD, str(full), str(out), precision)
        exp_few = run_child(EXPORT_CHILD, str(few), str(args.workdir / f"few-{precision}.gguf"), precision)
        bpt = gguf_bytes_per_token(out, args.prompt + args.tokens // 2)
        tps = run_child(SPEED_CHILD, BENCH_DIR, str(out), str(args.prompt), str(args.tokens), str(args.threads))[
            "tokens_per_s"
        ]
        rows.append(
            {
                "precision": precision,
                "file_mb": out.stat().st_size / 1e6,
                "export_seconds": exp["seconds"],
                "export_peak_rss_mb": exp["peak_rss_mb"],
                f"export_peak_rss_mb_{args.few_layers}_layers": exp_few["peak_rss_mb"],
                "decode_tokens_per_s": tps,
                "bytes_per_token_mb": bpt / 1e6,
                "roofline_tokens_per_s": bandwidth / bpt,
                "fraction_of_roofline": tps * bpt / bandwidth,
            }
        )
    report = {
        "checkpoint": f"{args.preset} ({layers} decoder layers), generated by edgekit make-tiny",
        "machine": {"cpu_count": os.cpu_count(), "read_bandwidth_gb_s": bandwidth / 1e9, "threads": args.threads},
        "import_baseline_rss_mb": baseline,
        "rows": rows,
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    print(
        f"{report['checkpoint']}; read bandwidth {bandwidth / 1e9:.2f} GB/s ({args.threads} threads); imports alone {baseline:.0f} MB RSS"
    )
    print(
        f"{'precision':>9} {'file MB':>8} {'export s':>8} {'peak RSS MB':>11} "
        f"{f'RSS {args.few_layers}-layer':>13} {'tok/s':>7} {'roofline':>8} {'of roof':>7}"
    )
    for r in rows:
        print(
            f"{r['precision']:>9} {r['file_mb']:8.1f} {r['export_seconds']:8.1f} {r['export_peak_rss_mb']:11.0f} "
            f"{r[f'export_peak_rss_mb_{args.few_layers}_layers']:13.0f} {r['decode_tokens_per_s']:7.1f} "
            f"{r['roofline_tokens_per_s']:8.1f} {r['fraction_of_roofline']:7.0%}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
