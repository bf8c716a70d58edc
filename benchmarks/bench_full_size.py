"""At 7B: every build path on a checkpoint of MiMo-Embodied-7B's exact dimensions (`make-tiny --preset full`:
decoder 36 x 4096, ViT 32 x 1280, vocab 151,680; 8.3 B parameters, 16.6 GB of bf16), on this machine, one job at a
time, each through the CLI as a user runs it, with its wall time, the peak RSS of its whole process tree (polled
every 0.2 s) and the bytes it wrote; then the bundle answering, `edgekit profile`, llama.cpp's own `llama-bench` on
the same GGUF (the decode ratio), and the user's alternative with llama.cpp's own tools (llama-imatrix +
llama-quantize Q4_K_M, started from edgekit's f16 GGUF: llama.cpp's converter refuses a generated tokenizer).

Resumable: a finished step's result is kept in benchmarks/results/full_size/steps.json and skipped on a rerun
(`--redo NAME` runs it again); the checkpoint and bundles live in --work (about 60 GB). The README's "At 7B" table is
benchmarks/results/full_size/table.md.

Regenerate:  python benchmarks/bench_full_size.py --work /path/with/60GB [--steps make,cpu-int4-rtn,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "full_size"
EDGEKIT = str(Path(sys.executable).parent / "edgekit")
IMAGE = REPO / "edgekit" / "data" / "assets" / "driving_0_001.png"
PROMPT = "What should the car do at this traffic light?"


def steps(w: Path) -> dict[str, list[str]]:
    """Each step: the command it runs (its outputs under `w`)."""
    ck, cache = w / "full", w / "calib-cache"

    def build(name: str, *opts: str) -> list[str]:
        return [EDGEKIT, "build", str(ck), *opts, "--calib-cache", str(cache), "--out", str(w / name)]

    return {
        "make": [EDGEKIT, "make-tiny", str(ck), "--preset", "full"],
        "cpu-int4-rtn": build("cpu-int4-rtn", "--target", "cpu", "--precision", "int4", "--method", "rtn"),
        "run-cpu-int4-rtn": [
            EDGEKIT,
            "run",
            "--bundle",
            str(w / "cpu-int4-rtn"),
            "--image",
            str(IMAGE),
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "16",
            "--json",
        ],
        "profile-cpu-int4-rtn": [
            EDGEKIT,
            "profile",
            str(w / "cpu-int4-rtn"),
            "--runs",
            "3",
            "--gen-tokens",
            "32",
            "--json",
        ],
        "cpu-int8-rtn": build("cpu-int8-rtn", "--target", "cpu", "--precision", "int8", "--method", "rtn"),
        "run-cpu-int8-rtn": [
            EDGEKIT,
            "run",
            "--bundle",
            str(w / "cpu-int8-rtn"),
            "--image",
            str(IMAGE),
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "16",
            "--json",
        ],
        "orin-int4-gguf": build(
            "orin-int4-gguf", "--target", "orin-agx-64", "--precision", "int4", "--backend", "gguf", "--method", "rtn"
        ),
        "orin-int4-tensorrt": build(
            "orin-int4-tensorrt",
            "--target",
            "orin-agx-64",
            "--precision",
            "int4",
            "--backend",
            "tensorrt",
            "--method",
            "rtn",
        ),
        "cpu-int4-gptq": build("cpu-int4-gptq", "--target", "cpu", "--precision", "int4"),
        "llama-f16": [EDGEKIT, "export-decoder", str(ck), "--precision", "f16", "--out", str(w / "llama" / "f16.gguf")],
    }


class PeakRss:
    """Peak resident memory of a process and all its descendants, polled."""

    def __init__(self, pid: int, every: float = 0.2):
        import psutil

        self.root, self.peak, self.every = psutil.Process(pid), 0, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self._stop.wait(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def run(cmd: list[str], log: Path, outputs: Path | None) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
        rss = PeakRss(proc.pid)
        stdout, _ = proc.communicate()
    peak = rss.stop()
    out = {
        "command": " ".join(Path(c).name if c == EDGEKIT else c for c in cmd),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gb": round(peak / 1e9, 2),
        "exit": proc.returncode,
        "bytes_written_gb": round(du(outputs) / 1e9, 2) if outputs else None,
    }
    if proc.returncode:
        out["error"] = log.read_text(errors="replace").strip().splitlines()[-1:][0][-500:] if log.stat().st_size else ""
    try:
        out["json"] = json.loads(stdout) if stdout.strip().startswith("{") else None
    except ValueError:
        out["json"] = None
    return out


def decode_side_by_side(gguf: Path, threads: int, out: Path) -> dict:
    """edgekit's decode loop against llama.cpp's llama-bench on the same GGUF, rounds alternated, a fresh process per
    measurement (benchmarks/bench_decode_loop.py): medians of 3 rounds of 32 tokens."""
    import statistics

    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_decode_loop.py"),
            "--gguf",
            str(gguf),
            "--rounds",
            "3",
            "--tokens",
            "32",
            "--threads",
            str(threads),
            "--json",
            str(out),
        ],
        check=True,
    )
    rounds = json.loads(out.read_text())["rounds"]
    med = {name: statistics.median(r["tokens_per_s"] for r in rows) for name, rows in rounds.items()}
    return {"edgekit_tokens_per_s": med["edgekit"], "llama_bench_tokens_per_s": med["llama-bench"]}


def llama_alternative(w: Path, threads: int) -> dict:
    """llama.cpp's own route to an importance-weighted Q4_K_M: llama-imatrix then llama-quantize, timed alone."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from llama_tools import imatrix, quantize

    text = w / "llama" / "calib.txt"
    from edgekit.data.calibration_mix import load_passages

    text.write_text("\n\n".join(p.text for p in load_passages()), encoding="utf-8")
    t0 = time.perf_counter()
    imatrix(w / "llama" / "f16.gguf", text, w / "llama" / "imatrix.dat", threads=threads)
    t1 = time.perf_counter()
    quantize(w / "llama" / "f16.gguf", w / "llama" / "q4_k_m.gguf", "Q4_K_M", w / "llama" / "imatrix.dat")
    t2 = time.perf_counter()
    return {"imatrix_seconds": round(t1 - t0, 1), "quantize_seconds": round(t2 - t1, 1)}


def table(results: dict) -> str:
    rows = ["| step | what | wall | peak RSS (tree) | written |", "|---|---|---|---|---|"]
    for name, r in results.get("steps", {}).items():
        mins = f"{r['seconds'] / 60:.1f} min" + ("" if r["exit"] == 0 else f" (exit {r['exit']}: {r.get('error', '')})")
        written = f"{r['bytes_written_gb']:.2f} GB" if r.get("bytes_written_gb") else ""
        rows.append(
            f"| {name} | `{r['command'].split(' --calib-cache')[0]}` | {mins} | {r['peak_rss_gb']:.1f} GB | {written} |"
        )
    extra = results.get("decode")
    if extra:
        rows += [
            "",
            f"Decode (Q4_K decoder, {extra['threads']} threads): edgekit {extra['edgekit_tokens_per_s']:.2f} "
            f"tokens/s, llama-bench {extra['llama_bench_tokens_per_s']:.2f} tokens/s: "
            f"**{extra['ratio']:.3f}x** (alternated rounds, bench_decode_loop.py); `profile`'s decode: "
            f"{extra.get('roofline_fraction', 0):.0%} of the measured read roofline.",
        ]
    alt = results.get("llama_alternative")
    if alt:
        rows += [
            "",
            f"llama.cpp's own route from the f16 GGUF: llama-imatrix {alt['imatrix_seconds'] / 60:.1f} min + "
            f"llama-quantize Q4_K_M {alt['quantize_seconds'] / 60:.1f} min.",
        ]
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="a folder with ~60 GB free for the checkpoint and bundles")
    ap.add_argument("--steps", default=None, help="comma-separated step names (default: all, in order)")
    ap.add_argument("--redo", default="", help="comma-separated steps to run again")
    ap.add_argument("--extras", action="store_true", help="also llama-bench and llama.cpp's imatrix+quantize route")
    args = ap.parse_args()
    w = args.work.resolve()
    w.mkdir(parents=True, exist_ok=True)
    (w / "llama").mkdir(exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "steps.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
    }
    all_steps = steps(w)
    chosen = args.steps.split(",") if args.steps else list(all_steps)
    redo = set(filter(None, args.redo.split(",")))
    done = results.setdefault("steps", {})
    for name in chosen:
        if name in done and done[name]["exit"] == 0 and name not in redo:
            print(f"{name}: kept ({done[name]['seconds']:.0f} s)")
            continue
        out_dir = {"make": w / "full", "llama-f16": w / "llama" / "f16.gguf"}.get(name, w / name)
        print(f"{name}: {' '.join(all_steps[name][1:3])} ...", flush=True)
        done[name] = run(
            all_steps[name], w / f"{name}.log", out_dir if not name.startswith(("run-", "profile-")) else None
        )
        print(
            f"{name}: exit {done[name]['exit']}, {done[name]['seconds']:.0f} s, peak {done[name]['peak_rss_gb']} GB",
            flush=True,
        )
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if args.extras:
        prof = (done.get("profile-cpu-int4-rtn") or {}).get("json") or {}
        threads = int(str(prof.get("threads") or os.cpu_count()).split()[0])  # "2 thread(s), OMP_WAIT_POLICY=..."
        pair = decode_side_by_side(
            w / "cpu-int4-rtn" / "decoder" / "decoder.gguf", threads, RESULTS / "decode_loop_q4k.json"
        )
        results["decode"] = {
            "threads": threads,
            **pair,
            "ratio": pair["edgekit_tokens_per_s"] / pair["llama_bench_tokens_per_s"],
            "roofline_fraction": prof.get("roofline", {}).get("fraction"),
        }
        results["llama_alternative"] = llama_alternative(w, threads)
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (RESULTS / "table.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
