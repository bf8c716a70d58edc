"""Task accuracy of a trained checkpoint and its quantized bundles on held-out generated scenes (README: "A trained
checkpoint").

1. Trains (or continues) `edgekit train-toy` in --work for --minutes of training in all.
2. Scores the full-precision checkpoint on held-out scenes (`heldout/<seed>`: never trained on) per task and domain
   with 95% bootstrap intervals, the same questions asked about other scenes (what a question alone earns), and its
   teacher-forced answer loss, against the random init's.
3. Builds CPU bundles of it (fp16; int8 GPTQ; int4 Q4_K RTN, AWQ, GPTQ; QAT from RTN and from GPTQ with
   --qat) at the training resolution, and runs `edgekit bench` on a held-out synthetic sample set (integer seed
   --samples-seed: a namespace training never draws from): task accuracy per domain x task with intervals and
   paired differences to full precision, latency, memory; QAT's recovery = the fraction of the INT4 init's accuracy
   drop it wins back.

Regenerate:  python benchmarks/bench_trained.py --preset tiny --minutes 45 --work /tmp/trained-tiny --qat \
                 --out benchmarks/results/trained
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_accuracy_latency import BUNDLES, bench  # the same builds and bench call (this folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
RESOLUTION = (280, 168)  # what a driving frame is trained at (TRAIN_MAX_PIXELS), the bundles' static vision input
QAT_INITS = ("rtn", "gptq")


def train(work: Path, preset: str, minutes: float, seed: int) -> dict:
    from edgekit.train.loop import train_toy
    from edgekit.train.recipe import default_recipe

    t = time.perf_counter()
    r = train_toy(work, default_recipe(preset, seed), minutes=minutes)
    print(f"trained {r.steps} steps, {r.seconds / 60:.1f} min in all ({time.perf_counter() - t:.0f} s now)", flush=True)
    return json.loads((work / "edgekit_training.json").read_text())


def build(ckpt: Path, workdir: Path, names: list[str], qat: bool) -> dict[str, Path]:
    from edgekit.bundle.build import BuildConfig, build_bundle
    from edgekit.qat.run import QATSettings, run_qat
    from edgekit.qat.state import QAT_MANIFEST
    from edgekit.quant.formats import parse

    out = {}
    for name in names:
        t = time.perf_counter()
        out[name] = build_bundle(
            ckpt,
            workdir / f"bundle-{name}",
            BuildConfig(target="cpu", resolution=RESOLUTION, **BUNDLES[name]),
            calib_cache=workdir / "calibration",
        )
        print(f"built {name} in {time.perf_counter() - t:.0f} s", flush=True)
    for init in QAT_INITS if qat else ():
        t = time.perf_counter()
        qat_dir = workdir / f"qat-{init}"
        if not (qat_dir / QAT_MANIFEST).is_file():  # a rerun reuses a finished QAT run
            run_qat(ckpt, qat_dir, QATSettings(parse("gguf:q4_k"), init=init), workdir / "calibration")
        out[f"int4-qat-{init}"] = build_bundle(
            qat_dir,
            workdir / f"bundle-int4-qat-{init}",
            BuildConfig(target="cpu", precision="int4", resolution=RESOLUTION),
            calib_cache=workdir / "calibration",
        )
        print(f"QAT from {init} + build in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def _ci(e: dict) -> str:
    return f"{e['mean']:.2f} [{e['ci95'][0]:.2f}, {e['ci95'][1]:.2f}]"


def heldout_table(record: dict, loss: dict, init_loss: dict) -> str:
    tasks, control = record["heldout"], record["heldout_mismatched"]
    lines = [
        "| task | metric | all [95% CI] | driving | embodied | mismatched image | chance | "
        "answer loss (init) nats/token |",
        "|" + "---|" * 8,
    ]
    for task, row in tasks.items():
        chance = f"{row['chance']:.2f}" if "chance" in row else ""
        lines.append(
            f"| {task} | {row['metric']} | {_ci(row['all'])} | {row['driving']['mean']:.2f} | "
            f"{row['embodied']['mean']:.2f} | {_ci(control[task]['all'])} | {chance} | "
            f"{loss[task]['mean']:.2f} ({init_loss[task]['mean']:.2f}) |"
        )
    return "\n".join(lines)


def variant_table(report: dict) -> str:
    from edgekit.data.scene import TASK_ORDER

    lines = [
        "| variant | " + " | ".join(TASK_ORDER) + " | all Δ vs FP [95% CI] | e2e p50 s | peak RSS MB |",
        "|" + "---|" * (len(TASK_ORDER) + 4),
    ]
    for r in report["rows"]:
        acc = r["accuracy"]
        cells = []
        for task in TASK_ORDER:
            vals = [acc[c] for c in acc if c.endswith("/" + task)]
            n = sum(v["n"] for v in vals)
            cells.append(f"{sum(v['mean'] * v['n'] for v in vals) / n:.2f}" if n else "")
        delta = acc["all"].get("delta")
        d = f"{delta['mean']:+.3f} [{delta['ci95'][0]:+.3f}, {delta['ci95'][1]:+.3f}]" if delta else "0"
        lines.append(
            f"| {r['name'].removeprefix('bundle-')} | "
            + " | ".join(cells)
            + f" | {d} | {r['latency']['e2e_s']['p50']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def qat_recovery(report: dict) -> dict:
    """(QAT − its INT4 init) / (FP − the INT4 init) on the overall score, per init."""
    rows = {r["name"].removeprefix("bundle-"): r["accuracy"]["all"] for r in report["rows"]}
    ref = next(r["accuracy"]["all"]["mean"] for r in report["rows"] if r["role"] == "baseline")
    out = {}
    for init in QAT_INITS:
        q, base = rows.get(f"int4-qat-{init}"), rows.get(f"int4-{init}")
        if q and base:
            drop = ref - base["mean"]
            out[init] = {
                "fp": ref,
                "ptq": base["mean"],
                "qat": q["mean"],
                "recovered": (q["mean"] - base["mean"]) / drop if drop > 0 else None,
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--minutes", type=float, default=45.0, help="training time in all (a run in --work continues)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgekit-trained"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "trained")
    ap.add_argument("--per-task", type=int, default=30, help="held-out questions per task and domain (reference)")
    ap.add_argument("--samples-n", type=int, default=50, help="held-out bench samples per domain")
    ap.add_argument("--samples-seed", type=int, default=7)
    ap.add_argument("--variants", default=",".join(BUNDLES))
    ap.add_argument("--qat", action="store_true", help="also QAT from RTN and from GPTQ (Q4_K) and their bundles")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()

    from edgekit.atomic import write_json, write_text
    from edgekit.data.synthetic import write_sample_set
    from edgekit.train.heldout_eval import evaluate_heldout_with_control, heldout_answer_loss

    ckpt = args.work / "checkpoint"
    record = train(ckpt, args.preset, args.minutes, args.seed)
    report, control = evaluate_heldout_with_control(ckpt, args.seed, args.per_task)
    record["heldout"], record["heldout_mismatched"] = report["tasks"], control["tasks"]
    loss = heldout_answer_loss(ckpt, args.seed, max(4, args.per_task // 3))
    init_loss = heldout_answer_loss(ckpt / ".train" / "init", args.seed, max(4, args.per_task // 3))
    samples = args.work / "heldout-samples"
    if not (samples / "driving.jsonl").is_file():
        write_sample_set(samples, args.samples_n, args.samples_seed)
    bundles = build(ckpt, args.work, args.variants.split(","), args.qat)
    bench_report = bench(
        ckpt,
        bundles,
        f"{samples / 'driving.jsonl'},{samples / 'embodied.jsonl'}",
        None,
        args.max_new_tokens,
        args.out / "bench",
    )
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    m = bench_report["machine"]
    text = [
        f"Trained: {args.preset}, {record['steps']} steps ({record['examples']} examples), "
        f"{record['training_seconds'] / 60:.1f} min on {m['cpu']}, {record['threads']} threads; `{command}`",
        "",
        f"**Full precision on held-out scenes** ({args.per_task} per task and domain):",
        "",
        heldout_table(record, loss, init_loss),
        "",
        f"**Bundles on {bench_report['samples']['n']} held-out samples** (seed {args.samples_seed}; task score "
        "by the bench's rules, overall paired difference to full precision):",
        "",
        variant_table(bench_report),
        "",
    ]
    recovery = qat_recovery(bench_report)
    for init, r in recovery.items():
        rec = "n/a (no drop to win back)" if r["recovered"] is None else f"{r['recovered']:.2f}"
        text.append(f"QAT from {init}: FP {r['fp']:.3f}, {init} {r['ptq']:.3f}, QAT {r['qat']:.3f}: recovered {rec}")
    write_text(args.out / "README-table.md", "\n".join(text) + "\n")
    write_json(
        args.out / "summary.json",
        {
            "training": record,
            "answer_loss": loss,
            "init_answer_loss": init_loss,
            "rows": bench_report["rows"],
            "qat_recovery": recovery,
            "machine": bench_report["machine"],
        },
    )
    print("\n".join(text))


if __name__ == "__main__":
    main()
