"""What QAT recovers, measured inside llama.cpp; and what it costs in memory and time.

--quality (default): one generated checkpoint (small: with its outlier channels). Held-out KL(FP‖Q) per token
  against the f32 GGUF (edgekit/data/heldout: prompts and images unlike every calibration source), text-only and
  image+text, for Q4_K decoders of the same file size: RTN PTQ, QAT from RTN, GPTQ PTQ, QAT from GPTQ. The QAT
  runs train on the default calibration mix (split 'calib'), the same sequences as the PTQ inits.
--bench: `edgekit bench` of CPU int4 bundles (Q4_K decoder) built from the same four decoders, against the
  full-precision reference, on the real samples' eval split (when ../shared is present) and the built-in ones:
  KL(FP‖bundle), top-1 and whole-answer agreement per domain, latency (run --quality first: it trains the QAT dirs).
--memory: peak RSS (VmHWM, a fresh process each) and time per step of `edgekit qat` on the medium preset
  (vocab 151,680) at 2, 4 and 8 decoder layers: phase 1 streams one layer at a time, so memory stays flat in depth.

Regenerate:  python benchmarks/bench_qat.py --preset small --json benchmarks/results/qat/quality_small.json
             python benchmarks/bench_qat.py --preset small --format gguf:nvfp4 \
                 --json benchmarks/results/qat/quality_small_nvfp4.json
             python benchmarks/bench_qat.py --bench --preset small --out benchmarks/results/qat/bench_small
             python benchmarks/bench_qat.py --memory --json benchmarks/results/qat/memory_medium.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import PEAK_RSS, make_checkpoint, run_child  # noqa: E402
from bench_quality import checkpoint_and_reference, edgekit_gguf, heldout_kl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

MEMORY_CHILD = (
    r"""
import json, sys, time
from edgekit.qat.run import QATSettings, run_qat
from edgekit.quant.formats import parse
steps = {"block": [], "distill": []}
last = [time.perf_counter()]
def on_step(label, done, total, loss):
    now = time.perf_counter()
    steps["distill" if label == "distill" else "block"].append(now - last[0])
    last[0] = now
def on_stage(s):
    last[0] = time.perf_counter()
t = time.perf_counter()
run_qat(sys.argv[1], sys.argv[2], QATSettings(parse("gguf:q4_k"), init="rtn", n_samples=int(sys.argv[4]),
        steps=int(sys.argv[5]), block_epochs=1, batch=4), sys.argv[3], on_step=on_step, on_stage=on_stage)
med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
print(json.dumps({"seconds": time.perf_counter() - t, "block_step_s": med(steps["block"]),
                  "distill_step_s": med(steps["distill"]), "peak_rss_mb": %s}))
"""
    % PEAK_RSS
)


def _tag(fmt: str) -> str:
    """File and variant prefix of a decoder format: "" for the default Q4_K, "nvfp4 " for gguf:nvfp4."""
    return "" if fmt == "gguf:q4_k" else fmt.split(":", 1)[1] + " "


def qat_gguf(ckpt: Path, work: Path, init: str, args) -> Path:
    from edgekit.qat.run import QATSettings, run_qat
    from edgekit.quant.formats import parse
    from edgekit.bundle.quantize import QuantizeConfig, quantize

    tag = _tag(args.format).strip()
    out = work / f"edgekit-qat-{tag + '-' if tag else ''}from-{init}.gguf"
    if out.is_file():
        return out
    qat_dir = work / f"qat-{tag + '-' if tag else ''}{init}"
    if not (qat_dir / "edgekit-qat.json").is_file():
        t = time.perf_counter()
        run_qat(
            ckpt,
            qat_dir,
            QATSettings(
                parse(args.format), init=init, n_samples=args.n, steps=args.steps, block_epochs=args.block_epochs
            ),
            work / "calib-cache",
            on_step=lambda label, d, total, loss: (
                print(f"  {label} {d}/{total} loss {loss:.3e}", flush=True) if d == total else None
            ),
        )
        print(f"QAT from {init}: {time.perf_counter() - t:.0f} s", flush=True)
    quantize(qat_dir, out, QuantizeConfig(format=parse(args.format), evaluate=0), cache=work / "calib-cache")
    return out


def quality(args) -> dict:
    from edgekit.data.calibration_mix import real_samples_files
    from edgekit.data.heldout import load_heldout

    work = args.work / args.preset
    ckpt, f32 = checkpoint_and_reference(work, args.preset)
    tag = _tag(args.format)
    files = {
        "RTN": edgekit_gguf(ckpt, work, f"{tag}rtn", args.n),
        "QAT from RTN": qat_gguf(ckpt, work, "rtn", args),
        "GPTQ": edgekit_gguf(ckpt, work, f"{tag}gptq", args.n),
        "QAT from GPTQ": qat_gguf(ckpt, work, "gptq", args),
    }
    items = load_heldout()
    kl, _ = heldout_kl(ckpt, f32, files, items)
    size = {name: path.stat().st_size for name, path in files.items()}
    print(
        f"\npreset {args.preset}; {len(items)} held-out prompts; calibration {args.n} sequences (real samples "
        f"{'present' if real_samples_files() else 'absent'}); QAT: {args.block_epochs} block epochs, {args.steps} "
        f"distillation steps; {platform.processor() or platform.machine()}, {os.cpu_count()} cores\n"
    )
    print(f"| {args.format} decoder | KL all | text | image+text | driving | embodied | vs its PTQ init | file size |")
    print("|---|---|---|---|---|---|---|---|")
    for name in files:
        k, init = kl[name], name.split()[-1]
        print(
            f"| {name} | {k['all']:.4f} | {k['text']:.4f} | {k['image+text']:.4f} | {k['driving']:.4f} | "
            f"{k['embodied']:.4f} | {k['all'] / kl[init]['all']:.2f} | {size[name] / size['RTN']:.3f} |"
        )
    return {
        "preset": args.preset,
        "format": args.format,
        "n": args.n,
        "steps": args.steps,
        "block_epochs": args.block_epochs,
        "kl": kl,
        "bytes": size,
        "ratios": {
            "QAT from RTN / RTN": kl["QAT from RTN"]["all"] / kl["RTN"]["all"],
            "QAT from GPTQ / GPTQ": kl["QAT from GPTQ"]["all"] / kl["GPTQ"]["all"],
        },
    }


def bench_bundles(args) -> dict:
    from bench_accuracy_latency import SHARED, bench, readme_table

    from edgekit.bundle.build import BuildConfig, build_bundle

    work = args.work / args.preset
    ckpt = work / "checkpoint"
    sources = {
        "int4-rtn": (ckpt, "rtn"),
        "int4-qat-from-rtn": (work / "qat-rtn", "rtn"),
        "int4-gptq": (ckpt, "gptq"),
        "int4-qat-from-gptq": (work / "qat-gptq", "gptq"),
    }
    bundles = {}
    for name, (model, method) in sources.items():
        out = work / f"bundle-{name}"
        if not (out / "edgekit.json").is_file():  # a QAT dir gives its trained codes whatever the method says
            build_bundle(
                model,
                out,
                BuildConfig(target="cpu", precision="int4", method=method, calib_n=args.n),
                calib_cache=work / "calib-cache",
            )
        bundles[name] = out
    reports = {}
    if (SHARED / "driving.jsonl").is_file():
        reports["real"] = bench(ckpt, bundles, str(SHARED), 40, 32, args.out / "real")
    reports["synthetic"] = bench(ckpt, bundles, "driving,embodied", None, 32, args.out / "synthetic")
    text = []
    for name, report in reports.items():
        text += [f"**{name} samples** ({report['samples']['n']} eval samples):", "", readme_table(report), ""]
    (args.out / "README-table.md").write_text("\n".join(text))
    print("\n".join(text))
    return {name: {"rows": r["rows"], "samples": r["samples"]} for name, r in reports.items()}


def memory(args) -> dict:
    work = args.work / "memory"
    rows = []
    for layers in (2, 4, 8):
        ckpt = make_checkpoint(work, "medium", layers)
        out = work / f"qat-{layers}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        r = run_child(MEMORY_CHILD, str(ckpt), str(out), str(work / f"cache-{layers}"), str(args.n), "4")
        rows.append({"layers": layers, **r})
        print(
            f"{layers:>2} layers: {r['seconds']:7.1f} s, phase 1 {r['block_step_s']:.2f} s/step, phase 2 "
            f"{r['distill_step_s']:.2f} s/step, peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    return {"preset": "medium", "n": args.n, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--memory", action="store_true", help="peak RSS and time per step at 2/4/8 layers (medium)")
    ap.add_argument("--bench", action="store_true", help="edgekit bench of the four decoders' CPU bundles")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "qat" / "bench_small")
    ap.add_argument("--preset", default="small")
    ap.add_argument(
        "--format",
        default="gguf:q4_k",
        help="--quality's decoder format: gguf:q4_k, or FP4: gguf:nvfp4, "
        "gguf:mxfp4 (their scales are bytes: QAT trains the latent weights, phase 2 is skipped)",
    )
    ap.add_argument("--n", type=int, default=64, help="calibration sequences (PTQ inits and QAT alike)")
    ap.add_argument("--steps", type=int, default=40, help="phase 2 steps")
    ap.add_argument("--block-epochs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / "out" / "bench_qat")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.memory and args.n == 64:
        args.n = 8
    report = memory(args) if args.memory else bench_bundles(args) if args.bench else quality(args)
    report["command"] = "python benchmarks/bench_qat.py " + " ".join(sys.argv[1:])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
