"""Accuracy-latency benchmark of CPU bundles against the full-precision reference (the README's results table).

Builds the medium checkpoint's CPU bundles (fp16; int8 = Q8_0 decoder + INT8 vision; int4 Q4_K with rtn, awq
and gptq; each with the build's defaults otherwise, calibrated on the built-in samples) and runs `edgekit bench`
on them twice: on the eval split of the real samples beside the repo (../shared/data/samples: DriveLM,
PCA-Bench, RoboAfford, PREQA) and on the built-in synthetic eval samples. Writes both reports (report.md and the
plots) under --out and prints the README table: per variant, per-domain KL(FP‖variant) and top-1 agreement with
95% intervals, whole-answer agreement, end-to-end p50 latency as a ratio to the reference's in the same run, and
peak RSS.

Regenerate:  python benchmarks/bench_accuracy_latency.py --preset medium --out benchmarks/results/accuracy_latency
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "samples"
BUNDLES = {  # name -> BuildConfig fields
    "fp16": {"precision": "fp16"},
    "int8-gptq": {"precision": "int8", "method": "gptq"},
    "int4-rtn": {"precision": "int4", "method": "rtn"},
    "int4-awq": {"precision": "int4", "method": "awq"},
    "int4-gptq": {"precision": "int4", "method": "gptq"},
}


def build_all(ckpt: Path, workdir: Path, names: list[str], reuse: bool) -> dict[str, Path]:
    from edgekit.bundle.build import BuildConfig, build_bundle
    from edgekit.bundle.manifest import verify_bundle

    out = {}
    for name in names:
        if (
            reuse
            and (workdir / f"bundle-{name}" / "edgekit.json").is_file()
            and verify_bundle(workdir / f"bundle-{name}", deep=False).ok
        ):
            out[name] = workdir / f"bundle-{name}"
            print(f"reusing {out[name]}", flush=True)
            continue
        t = time.perf_counter()
        out[name] = build_bundle(
            ckpt,
            workdir / f"bundle-{name}",
            BuildConfig(target="cpu", **BUNDLES[name]),
            calib_cache=workdir / "calibration",
        )
        print(f"built {name} in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def bench(ckpt: Path, bundles: dict[str, Path], samples: str, n: int | None, tokens: int, out: Path) -> dict:
    from edgekit.bench.harness import BenchConfig, run_bench
    from edgekit.bench.outputs import write_report

    t = time.perf_counter()
    cfg = BenchConfig(
        variants=tuple(str(p) for p in bundles.values()), reference=ckpt, samples=samples, n=n, max_new_tokens=tokens
    )
    report = run_bench(cfg, log=lambda s: print(s, flush=True))
    write_report(report, out)
    print(f"bench on {samples}: {report['samples']['n']} samples, {time.perf_counter() - t:.0f} s -> {out}", flush=True)
    return report


def _ci(entry: dict, fmt: str) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['mean']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def readme_table(report: dict) -> str:
    lines = [
        "| variant | decoder + vision | KL driving | KL embodied | top-1 driving | top-1 embodied | same answer "
        "| e2e p50 s (× ref) | peak RSS MB |",
        "|" + "---|" * 9,
    ]
    for r in report["rows"]:
        lat = r["latency"]
        e2e = f"{lat['e2e_s']['p50']:.2f} ({lat['e2e_p50_ratio_to_reference']:.2f})"
        if r["role"] == "baseline":
            lines.append(f"| reference | {r['precision']} | 0 | 0 | 1 | 1 | 1 | {e2e} | {r['peak_rss_mb']:.0f} |")
            continue
        f = r["fidelity"]
        lines.append(
            f"| {r['name'].removeprefix('bundle-')} | {r['precision']} | {_ci(f['driving']['kl'], '.2e')} | "
            f"{_ci(f['embodied']['kl'], '.2e')} | {_ci(f['driving']['top1'], '.2f')} | "
            f"{_ci(f['embodied']['top1'], '.2f')} | {f['all']['whole_answer']['mean']:.2f} | {e2e} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgekit-bench-accuracy-latency"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "accuracy_latency")
    ap.add_argument("--variants", default=",".join(BUNDLES))
    ap.add_argument("--n-real", type=int, default=60, help="real eval samples, balanced across domains and tasks")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--reuse", action="store_true", help="keep bundles already built in --workdir (they must verify)")
    args = ap.parse_args()

    from edgekit.model.fixtures import make_tiny

    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt = args.workdir / f"checkpoint-{args.preset}"
    if not (ckpt / "config.json").is_file():
        make_tiny(ckpt, args.preset)
    bundles = build_all(ckpt, args.workdir, args.variants.split(","), args.reuse)
    reports = {}
    if (SHARED / "driving.jsonl").is_file():
        reports["real"] = bench(ckpt, bundles, str(SHARED), args.n_real, args.max_new_tokens, args.out / "real")
    else:
        print(f"{SHARED}: not present; real-sample benchmark skipped", file=sys.stderr)
    reports["synthetic"] = bench(ckpt, bundles, "driving,embodied", None, args.max_new_tokens, args.out / "synthetic")
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    text = []
    for name, report in reports.items():
        m = report["machine"]
        text += [
            f"**{name} samples** ({report['samples']['n']} eval samples; {m['cpu']}, {m['cores']} cores; `{command}`):",
            "",
            readme_table(report),
            "",
        ]
    (args.out / "README-table.md").write_text("\n".join(text))
    (args.out / "summary.json").write_text(
        json.dumps(
            {k: {"rows": v["rows"], "machine": v["machine"], "samples": v["samples"]} for k, v in reports.items()},
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    print("\n".join(text))


if __name__ == "__main__":
    main()
