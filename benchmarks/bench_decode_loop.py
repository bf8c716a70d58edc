"""edgekit's greedy decode loop against llama.cpp's own `llama-bench` on the same GGUF, and where the difference goes.

Same file, same thread count, rounds alternated, each measurement in a fresh process (two OpenMP pools in one
process would share the two cores):
- `llama-bench -p 0 -n N`: llama.cpp's C++ loop (N one-token decodes; it reads no logits and picks no token);
- edgekit's loop, `LlamaDecoder.generate`: one reused batch, the argmax read in llama.cpp's logits buffer;
- the earlier loop (`prefill` + `step` + numpy argmax): a new batch per token, the vocabulary's logits copied out.
Both Python loops do N decodes (a one-token prompt, then N - 1 steps), after a warm-up run as llama-bench does.
Per token, the time inside `llama_decode` and the rest (greedy selection, Python) are reported separately.
llama-bench is built from the pinned llama-cpp-python source distribution with the installed library's flags
(scripts/build_llama_tools.sh, about 6 minutes the first time).

Regenerate:  python benchmarks/bench_decode_loop.py --preset medium --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

LOOP_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from bench_decode_loop import python_loop
print(json.dumps(python_loop(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
"""


def python_loop(gguf: str, variant: str, n_tokens: int, threads: int) -> dict:
    """Tokens/s of one Python greedy loop over n_tokens decodes, and the per-token time inside llama_decode."""
    import numpy as np

    from edgekit.runtime.llama_decoder import LlamaDecoder

    dec = LlamaDecoder(gguf, n_ctx=512, n_threads=threads)
    inside = [0.0]
    raw = dec._decode

    def timed(batch, **kw):  # the time in llama.cpp itself (and copying logits out, when the loop asks for them)
        t = time.perf_counter()
        try:
            return raw(batch, **kw)
        finally:
            inside[0] += time.perf_counter() - t

    dec._decode = timed
    prompt = [dec.tokenize("The")[0]]

    def run() -> list[int]:
        if variant == "edgekit":
            return list(dec.generate(prompt, max_new_tokens=n_tokens, stop_at_end=False))
        out, last = [], dec.prefill(prompt)[-1]
        for i in range(n_tokens):
            out.append(int(np.argmax(last)))
            if i + 1 < n_tokens:
                last = dec.step(out[-1])
        return out

    run()  # warm-up
    inside[0] = 0.0
    t = time.perf_counter()
    tokens = run()
    wall = time.perf_counter() - t
    dec.close()
    return {
        "tokens_per_s": n_tokens / wall,
        "ms_per_token": 1e3 * wall / n_tokens,
        "ms_in_llama_decode": 1e3 * inside[0] / n_tokens,
        "tokens": tokens,
    }


def llama_bench(tool: Path, gguf: str, n_tokens: int, threads: int) -> dict:
    out = subprocess.run(
        [str(tool), "-m", gguf, "-p", "0", "-n", str(n_tokens), "-t", str(threads), "-r", "1", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    tps = float(json.loads(out.stdout)[0]["avg_ts"])
    return {"tokens_per_s": tps, "ms_per_token": 1e3 / tps}


def build_gguf(workdir: Path, preset: str) -> Path:
    from bench_gguf import make_checkpoint

    from edgekit.export.gguf import write_decoder_gguf

    path = workdir / f"{preset}-q4_k.gguf"
    if not path.is_file():
        write_decoder_gguf(make_checkpoint(workdir, preset, None), path, "q4_k")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--gguf", type=Path, help="a GGUF decoder to use instead of the preset's q4_k export")
    ap.add_argument("--workdir", type=Path, default=REPO / "out" / "bench_decode_loop")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    gguf = str(args.gguf or build_gguf(args.workdir, args.preset))
    tools = (
        subprocess.run(
            ["bash", str(REPO / "scripts" / "build_llama_tools.sh")], check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    bench_tool = Path(tools) / "llama-bench"

    rows: dict[str, list[dict]] = {"llama-bench": [], "edgekit": [], "copied": []}
    for r in range(args.rounds):
        for name in rows:
            if name == "llama-bench":
                m = llama_bench(bench_tool, gguf, args.tokens, args.threads)
            else:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        LOOP_CHILD,
                        str(Path(__file__).parent),
                        gguf,
                        name,
                        str(args.tokens),
                        str(args.threads),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                m = json.loads(out.stdout.strip().splitlines()[-1])
            rows[name].append(m)
            print(f"round {r + 1}: {name:12s} {m['tokens_per_s']:7.1f} tokens/s", flush=True)
    same = rows["edgekit"][0]["tokens"] == rows["copied"][0]["tokens"]

    def med(name: str, key: str) -> float:
        return statistics.median(m[key] for m in rows[name])

    ref = med("llama-bench", "tokens_per_s")
    labels = {
        "llama-bench": "llama-bench tg (C++, no logits read)",
        "edgekit": "edgekit `generate` (argmax in place)",
        "copied": "earlier loop (logits copied, numpy argmax)",
    }
    print(
        f"\n{Path(gguf).name}, {args.tokens} tokens, {args.threads} threads, median of {args.rounds} alternated rounds; "
        f"same tokens from both Python loops: {'yes' if same else 'NO'}"
    )
    print("| loop | tokens/s | ratio to llama-bench | ms/token | in llama_decode | outside |")
    print("|---|---|---|---|---|---|")
    for name, label in labels.items():
        tps, ms = med(name, "tokens_per_s"), med(name, "ms_per_token")
        if name == "llama-bench":
            print(f"| {label} | {tps:.1f} | 1.00 | {ms:.2f} | | |")
        else:
            inside = med(name, "ms_in_llama_decode")
            print(f"| {label} | {tps:.1f} | {tps / ref:.3f} | {ms:.2f} | {inside:.2f} | {ms - inside:.3f} |")
    if args.json:
        args.json.write_text(
            json.dumps({"gguf": gguf, "threads": args.threads, "rounds": rows, "same_tokens": same}, indent=1)
        )


if __name__ == "__main__":
    main()
