"""Commands: bench (accuracy and latency against full precision), profile (latency of one bundle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgekit.cli.app import app, console, err_console, progress


@app.command("bench")
def bench_cmd(
    variants: Annotated[
        list[str],
        typer.Argument(
            help="Bundle directories to compare (GGUF decoder + ONNX vision), "
            "and/or 'reference' to benchmark the reference against itself."
        ),
    ],
    reference: Annotated[Path, typer.Option(help="The full-precision checkpoint the bundles were built from.")],
    samples: Annotated[
        str,
        typer.Option(
            help="Sample sets: built-in names (driving,embodied), JSONL files or "
            "directories of them, comma-separated (docs/samples.md)."
        ),
    ] = "driving,embodied",
    split: Annotated[str, typer.Option(help="eval | calib | all: which samples of the files to answer.")] = "eval",
    n: Annotated[
        Optional[int],
        typer.Option(
            "--n",
            min=1,
            help="Answer this many samples, balanced across domains and task types (default: all of the split).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the sample mix.")] = 0,
    think: Annotated[
        bool,
        typer.Option("--think/--no-think", help="Let the model think aloud first; answers are scored after </think>."),
    ] = False,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Greedy answers stop after this many tokens.")] = 32,
    threads: Annotated[
        Optional[int],
        typer.Option(min=1, help="Threads per pipeline (default: every core; pipelines run one at a time)."),
    ] = None,
    reference_dtype: Annotated[
        str, typer.Option(help="float32 (the oracle) | bfloat16 (half the memory).")
    ] = "float32",
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Skip malformed sample lines (counted in the report) instead of stopping."),
    ] = False,
    allow_different_source: Annotated[
        bool,
        typer.Option(
            "--allow-different-source",
            help="Benchmark a bundle built from other weights than --reference (refused by "
            "default: the manifest records the source's hash).",
        ),
    ] = False,
    out: Annotated[Path, typer.Option(help="Report directory: absent, empty, or an earlier report (replaced).")] = Path(
        "bench-report"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json without its per-sample records.")] = False,
) -> None:
    """Benchmark bundles against the full-precision reference on the same samples: task scores per domain and task
    type with 95% intervals, fidelity (KL, agreement), latency per stage, peak memory. Writes report.json, report.md
    and plots to --out."""
    from edgekit.bench.harness import BenchConfig, run_bench
    from edgekit.bench.outputs import check_out_dir, write_report
    from edgekit.outputs import spec_paths

    cfg = BenchConfig(
        variants=tuple(variants),
        reference=reference,
        samples=samples,
        split=None if split == "all" else split,
        n=n,
        seed=seed,
        think=think,
        max_new_tokens=max_new_tokens,
        threads=threads,
        reference_dtype=reference_dtype,
        skip_bad=skip_bad,
        allow_different_source=allow_different_source,
    )
    check_out_dir(out, [reference, *(Path(v) for v in variants), *spec_paths(samples)])
    with progress(eta=True) as bar:
        task = bar.add_task("bench", total=None)
        report = run_bench(
            cfg,
            on_start=lambda total: bar.update(task, total=total),
            on_progress=lambda what: bar.update(task, advance=1, description=what[:48]),
            log=lambda line: bar.update(task, description=line[:48]),
        )
    files = write_report(report, out)
    if as_json:
        print(json.dumps(_summary(report), indent=2, sort_keys=True))
    else:
        _print_table(report)
    err_console.print(f"report: {', '.join(str(f) for f in files)}")


def _summary(report: dict) -> dict:
    """report.json without the per-sample records."""
    return {k: v for k, v in report.items() if k != "records"}


def _print_table(report: dict) -> None:
    """The summary in a terminal's width: means only (report.md has the intervals)."""
    from rich.table import Table

    def num(x, fmt):
        return "—" if x is None else format(x, fmt)

    table = Table(title=f"edgekit bench: {report['samples']['n']} samples on {report['machine']['cpu']}")
    for h in (
        "row",
        "precision",
        "score",
        "Δ vs ref",
        "KL(FP‖row)",
        "top-1",
        "same answer",
        "e2e p50 s",
        "× ref",
        "tok/s",
        "RSS MB",
    ):
        table.add_column(h, overflow="fold")
    for r in report["rows"]:
        acc, lat, fid = r["accuracy"]["all"], r["latency"], r.get("fidelity", {}).get("all")
        table.add_row(
            r["name"],
            r["precision"],
            num(acc["mean"], ".3f"),
            num((acc.get("delta") or {}).get("mean"), "+.3f"),
            num(fid["kl"]["mean"], ".4f") if fid else "0",
            num(fid["top1"]["mean"], ".2f") if fid else "1",
            num(fid["whole_answer"]["mean"], ".2f") if fid else "1",
            num(lat["e2e_s"]["p50"], ".3f"),
            num(lat["e2e_p50_ratio_to_reference"], ".2f"),
            num(lat["decode_tokens_per_s"]["p50"], ".0f"),
            num(r["peak_rss_mb"], ".0f"),
        )
    console.print(table)


@app.command("profile")
def profile_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (GGUF decoder) to time on this machine.")],
    runs: Annotated[int, typer.Option(min=1, help="Measured runs (after --warmup runs that are not counted).")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="Runs before measuring, not counted.")] = 2,
    image_size: Annotated[
        Optional[str],
        typer.Option(
            help="Synthetic camera image WIDTHxHEIGHT (default: the "
            "bundle's resolution); resized to the bundle's as usual."
        ),
    ] = None,
    prompt_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens of question text (the chat template and image tokens come on top).")
    ] = 64,
    gen_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens generated per run (end-of-text does not stop it).")
    ] = 64,
    threads: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Decoder and vision threads (default: the setting "
            "--tune recorded for this bundle here, else every core).",
        ),
    ] = None,
    background_load: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also measure while this many busy processes run on the same cores: slowdown and jitter under load.",
        ),
    ] = 0,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Measure thread count x OpenMP wait policy (under "
            "--background-load) and record the fastest for this bundle on this machine.",
        ),
    ] = False,
    csv: Annotated[
        Optional[Path],
        typer.Option(help="Write every run's stage times to this CSV file (new, or an earlier profile CSV)."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Let --csv replace a file edgekit did not write (never one inside the bundle)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
) -> None:
    """Latency of one bundle here: per-stage percentiles, jitter, tokens/s against this machine's measured roofline,
    tegrastats power on a Jetson, slowdown under background load, and (--tune) the thread settings to use."""
    from edgekit.bench.profile import ProfileConfig, claim_csv, run_profile, write_csv
    from edgekit.cli.options import parse_resolution

    if csv:
        claim_csv(csv, bundle, force=force)  # before any run: never over the bundle or a user's file

    cfg = ProfileConfig(
        bundle=bundle,
        runs=runs,
        warmup=warmup,
        image_size=parse_resolution(image_size) if image_size else None,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        threads=threads,
        background_load=background_load,
        tune=tune,
    )
    with progress(eta=True) as bar:
        task = bar.add_task("profile", total=None)
        result = run_profile(
            cfg,
            log=lambda line: bar.update(task, description=line[:48]),
            on_start=lambda total: bar.update(task, total=total),
            on_run=lambda phase: bar.update(task, advance=1, description=phase[:48]),
        )
    if csv:
        write_csv(result["runs"], csv)
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2, sort_keys=True))
        return
    _print_profile(result)


def _print_profile(p: dict) -> None:
    from rich.table import Table

    table = Table(
        title=f"edgekit profile: {p['bundle']['precision']} decoder, {p['prompt_tokens']} prompt tokens, "
        f"{p['config']['gen_tokens']} generated; {p['threads']}"
    )
    for h in ("stage", "p50 s", "p90 s", "p99 s") + (("p50 under load", "× alone") if "under_load" in p else ()):
        table.add_column(h)
    for stage in ("preprocess_s", "vision_s", "prefill_s", "ttft_s", "decode_s", "e2e_s"):
        a = p["alone"][stage]
        row = [stage[:-2], f"{a['p50']:.3f}", f"{a['p90']:.3f}", f"{a['p99']:.3f}"]
        if "under_load" in p:
            u = p["under_load"][stage]["p50"]
            row += [f"{u:.3f}", f"{u / a['p50']:.2f}" if a["p50"] else "—"]
        table.add_row(*row)
    console.print(table)
    r = p["roofline"]
    tps = p["alone"]["decode_tokens_per_s"]["p50"]
    console.print(
        f"decode {tps:.1f} tokens/s = {r['fraction']:.0%} of this machine's roofline {r['tokens_per_s_bound']:.0f} "
        f"tokens/s ({r['read_bandwidth_gb_s']:.1f} GB/s measured / {r['bytes_per_token_mb']:.1f} MB per token); "
        f"jitter p99/p50 {p['alone']['jitter_p99_over_p50']:.2f}",
        highlight=False,
    )
    if "under_load" in p:
        u = p["under_load"]
        console.print(
            f"with {u['processes']} busy process(es): end to end ×{u['slowdown_e2e_p50']:.2f}, decode "
            f"×{u['decode_tokens_per_s_ratio']:.2f} tokens/s, jitter p99/p50 {u['jitter_p99_over_p50']:.2f}"
        )
    t = p["tegrastats"]
    console.print(
        t
        if isinstance(t, str)
        else f"tegrastats: {t['input_power_mw_mean']:.0f} mW in, "
        f"{t['energy_mj_per_token']:.1f} mJ per token, GR3D {t['gr3d_pct_mean']}%, EMC {t['emc_pct_mean']}%"
    )
    if p["tuning"]:
        tuning = Table(title=f"thread settings under {p['config']['background_load']} busy process(es)")
        for h in ("threads", "OMP_WAIT_POLICY", "e2e p50 s", "e2e p99 s"):
            tuning.add_column(h)
        for t in p["tuning"]["trials"]:
            tuning.add_row(
                str(t["threads"]), t["omp_wait_policy"] or "default", f"{t['e2e_p50_s']:.3f}", f"{t['e2e_p99_s']:.3f}"
            )
        console.print(tuning)
        c = p["tuning"]["chosen"]
        console.print(
            f"tuned: {c['threads']} thread(s), OMP_WAIT_POLICY={c['omp_wait_policy'] or 'default'} "
            f"(recorded in {p['tuning']['recorded_in']})"
        )
