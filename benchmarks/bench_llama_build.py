"""Which llama.cpp build to install: decode tokens/s of candidate builds, side by side in one run.

Candidates are llama-cpp-python wheels (built by scripts/build_llama_cpp.sh or by hand with other CMAKE_ARGS),
each unpacked into the work directory and put first on PYTHONPATH of a fresh child process, so every
candidate decodes the same GGUF files (generated checkpoint, f16 / q8_0 / q4_k) with the same prompt and
threads. Rounds alternate the candidates (this machine is noisy); the table gives the median and the ratio to
the first candidate. `NAME=WHEEL` adds a wheel; `NAME=WHEEL+noextra` runs it with
`llama_model_params.use_extra_bufts = False` (the run-time way around the AMX crash, which also turns off
the REPACK kernels). Each child also reports the build's `llama_print_system_info()`.

Regenerate (README, "Which llama.cpp build"):
    python benchmarks/bench_llama_build.py --preset medium \
        --candidate "native, no AMX (edgekit)=.cache/llama-cpp-wheels/*/*.whl" \
        --candidate "native, no AMX, use_extra_bufts off=.cache/llama-cpp-wheels/*/*.whl+noextra" \
        --candidate "explicit AVX-512 flags, GGML_NATIVE=OFF=/path/avx512.whl" \
        --candidate "AVX2 only, GGML_NATIVE=OFF=/path/avx2.whl"
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import make_checkpoint  # noqa: E402

DECODE_CHILD = r"""
import ctypes, json, sys, time
import numpy as np
import llama_cpp as L
path, n_prompt, n_tokens, threads, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
quiet = L.llama_log_callback(lambda level, text, user: None)
L.llama_log_set(quiet, ctypes.c_void_p(0))
L.llama_backend_init()
mp = L.llama_model_default_params()
mp.use_extra_bufts = extra == "1"
model = L.llama_model_load_from_file(path.encode(), mp)
cp = L.llama_context_default_params()
cp.n_ctx = n_prompt + n_tokens + 8
cp.n_batch = cp.n_ubatch = 512
cp.n_threads = cp.n_threads_batch = threads
ctx = L.llama_init_from_model(model, cp)
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))

def decode(ids):
    arr = (L.llama_token * len(ids))(*ids)
    assert L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids))) == 0
    return np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))

logits = decode(np.random.default_rng(0).integers(0, min(n_vocab, 4000), n_prompt).tolist())
t = time.perf_counter()
for _ in range(n_tokens):  # fixed length: an end-of-generation token does not stop a benchmark
    logits = decode([int(np.argmax(logits))])
seconds = time.perf_counter() - t
print(json.dumps({"tokens_per_s": n_tokens / seconds, "system_info": L.llama_print_system_info().decode(),
                  "llama_cpp": L.__file__}))
"""


def unpack(wheel: Path, workdir: Path) -> Path:
    import hashlib

    # Every build of one version has the same wheel name: key the directory by the wheel's content.
    target = workdir / "wheels" / hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    if not (target / "llama_cpp").is_dir():
        zipfile.ZipFile(wheel).extractall(target)
    return target


def parse_candidate(spec: str, workdir: Path) -> tuple[str, Path, bool]:
    name, _, where = spec.rpartition("=")
    extra = not where.endswith("+noextra")
    where = where.removesuffix("+noextra")
    matches = sorted(glob.glob(where))
    if len(matches) != 1:
        raise SystemExit(f"--candidate {spec!r}: {where} matches {len(matches)} files, need exactly one wheel")
    return name, unpack(Path(matches[0]), workdir), extra


def run_decode(site: Path, gguf: Path, extra: bool, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            DECODE_CHILD,
            str(gguf),
            str(args.prompt),
            str(args.tokens),
            str(args.threads),
            "1" if extra else "0",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        return {
            "error": f"exit {proc.returncode}" + (" (killed by a signal)" if proc.returncode < 0 else ""),
            "stderr": proc.stderr[-500:],
        }
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["llama_cpp"].startswith(str(site)), out["llama_cpp"]  # the candidate's build, not the venv's
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--candidate", action="append", required=True, help="NAME=WHEEL[+noextra]; the first is the baseline"
    )
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--precisions", default="q4_k,q8_0,f16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "edgekit-bench-gguf")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    from edgekit.export.gguf import write_decoder_gguf

    ckpt = make_checkpoint(args.workdir, args.preset, None)
    ggufs = {}
    for p in args.precisions.split(","):
        ggufs[p] = args.workdir / f"{args.preset}-{p}.gguf"
        if not ggufs[p].is_file():
            write_decoder_gguf(ckpt, ggufs[p], p)
    candidates = [parse_candidate(c, args.workdir) for c in args.candidate]
    runs: dict[tuple[str, str], list] = {}
    info: dict[str, str] = {}
    for r in range(args.rounds):
        order = candidates if r % 2 == 0 else candidates[::-1]
        for name, site, extra in order:
            for p, gguf in ggufs.items():
                out = run_decode(site, gguf, extra, args)
                runs.setdefault((name, p), []).append(out)
                info.setdefault(name, out.get("system_info", out.get("error", "")))
                print(
                    f"round {r + 1} {name:<45} {p:>5}: "
                    + (f"{out['tokens_per_s']:.1f} tok/s" if "tokens_per_s" in out else out["error"]),
                    flush=True,
                )

    def median(name, p):
        vals = [o["tokens_per_s"] for o in runs[(name, p)] if "tokens_per_s" in o]
        return statistics.median(vals) if len(vals) == len(runs[(name, p)]) else None

    base = candidates[0][0]
    rows = []
    for name, _, _ in candidates:
        row = {"candidate": name, "system_info": info[name]}
        for p in ggufs:
            m, b = median(name, p), median(base, p)
            row[p] = {
                "tokens_per_s": m,
                "ratio_to_first": (m / b) if m and b else None,
                "runs": [o.get("tokens_per_s", o.get("error")) for o in runs[(name, p)]],
            }
        rows.append(row)
    print("\n| build | " + " | ".join(f"{p} tok/s (ratio)" for p in ggufs) + " |")
    print("|---|" + "---|" * len(ggufs))
    for row in rows:
        cells = [
            f"{row[p]['tokens_per_s']:.1f} ({row[p]['ratio_to_first']:.2f})" if row[p]["tokens_per_s"] else "crashed"
            for p in ggufs
        ]
        print(f"| {row['candidate']} | " + " | ".join(cells) + " |")
    for row in rows:
        print(f"{row['candidate']}: {row['system_info'].strip()}")
    if args.json:
        report = {
            "rows": rows,
            "preset": args.preset,
            "threads": args.threads,
            "rounds": args.rounds,
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        }
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
