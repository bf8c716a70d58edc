"""report.md: the benchmark report for people, rendered from report.json alone."""

from __future__ import annotations


def _num(x, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def _ci(entry: dict | None, fmt: str = ".3f") -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    lo, hi = entry["ci95"]
    return f"{entry['mean']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _signed_ci(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    lo, hi = entry["ci95"]
    return f"{entry['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def summary_rows(report: dict) -> list[list[str]]:
    """One line per row: what the README's results table and the terminal show too."""
    out = []
    for r in report["rows"]:
        acc, lat = r["accuracy"]["all"], r["latency"]
        fid = r.get("fidelity", {}).get("all", {})
        out.append(
            [
                r["name"] + (" (baseline)" if r["role"] == "baseline" else ""),
                r["precision"],
                _ci(acc),
                _signed_ci(acc.get("delta")),
                _ci(fid.get("kl"), ".2e") if fid else "0",
                _ci(fid.get("top1")) if fid else "1",
                _num(fid["whole_answer"]["mean"], ".2f") if fid else "1",
                _num(lat["e2e_s"]["p50"]),
                _num(lat["e2e_p50_ratio_to_reference"], ".2f"),
                _num(lat["ttft_s"]["p50"]),
                _num(lat["decode_tokens_per_s"]["p50"], ".1f"),
                _num(r["peak_rss_mb"], ".0f"),
            ]
        )
    return out


SUMMARY_HEADER = [
    "row",
    "precision",
    "score [95% CI]",
    "Δ score vs ref",
    "KL(FP‖row)",
    "top-1 agree",
    "same answer",
    "e2e p50 s",
    "e2e vs ref",
    "TTFT p50 s",
    "decode tok/s",
    "peak RSS MB",
]


def render(report: dict) -> str:
    m, s, c = report["machine"], report["samples"], report["config"]
    lines = [
        "# edgekit bench report",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['system']}; one pipeline computes at a time",
        f"- reference: `{c['reference']}` ({c['reference_dtype']}); samples: `{c['samples']}`, split {c['split'] or 'all'}, "
        f"{s['n']} answered, {s['skipped_bad']} bad line(s) skipped; {'think' if c['think'] else 'no-think'} mode, "
        f"greedy, at most {c['max_new_tokens']} new tokens; {c['warmup']} warm-up answer(s) per pipeline not counted",
        f"- schema {report['schema']}, edgekit {report['edgekit']}, run {report['run_s']:.0f} s",
        "",
        "## Summary",
        "",
        "Score: each task's headline metric averaged over every sample (multiple choice and short answer accuracy, "
        "open-ended ROUGE-L, box accuracy@0.5, point fraction in mask). KL and top-1: teacher-forced on the "
        "reference's own answer tokens. Latency: p50 over the samples in this run.",
        "",
    ]
    lines += _table(SUMMARY_HEADER, summary_rows(report))
    lines += [
        "",
        "![accuracy and KL vs latency](accuracy_vs_latency.png)",
        "",
        "## Fidelity to full precision, per domain",
        "",
    ]
    rows = []
    for r in report["rows"]:
        for dom, f in r.get("fidelity", {}).items():
            rows.append(
                [
                    r["name"],
                    dom,
                    str(f["kl"]["n"]),
                    _ci(f["kl"], ".2e"),
                    _ci(f["top1"]),
                    _ci(f["first_token"], ".2f"),
                    _ci(f["whole_answer"], ".2f"),
                    _ci(f.get("open_ended_rouge_l_to_fp"), ".2f"),
                ]
            )
    lines += _table(
        [
            "variant",
            "domain",
            "n",
            "KL(FP‖variant)",
            "top-1",
            "first token",
            "whole answer",
            "open-ended ROUGE-L to FP",
        ],
        rows,
    )
    lines += ["", "## Task scores per domain and task type", ""]
    rows = []
    for r in report["rows"]:
        for cell, a in r["accuracy"].items():
            rows.append(
                [r["name"], cell, a["metric"], str(a["n"]), _ci(a), _signed_ci(a.get("delta")), _ci(a.get("iou"))]
            )
    lines += _table(["row", "domain/task", "metric", "n", "score [95% CI]", "Δ vs reference (paired)", "IoU"], rows)
    lines += ["", "![per-task differences](task_deltas.png)", "", "## Latency per stage (seconds; p50 / p90 / p99)", ""]
    rows = []
    for r in report["rows"]:
        lat = r["latency"]
        cells = [
            f"{_num(lat[k]['p50'])} / {_num(lat[k]['p90'])} / {_num(lat[k]['p99'])}"
            for k in ("preprocess_s", "vision_s", "prefill_s", "ttft_s", "decode_s", "e2e_s")
        ]
        rows.append(
            [r["name"]]
            + cells
            + [
                _num(lat["decode_tokens_per_s"]["p50"], ".1f"),
                _num(lat["harness_overhead_s"]["p50"] * 1e3, ".1f"),
                _num(r["load_s"], ".1f"),
            ]
        )
    lines += _table(
        [
            "row",
            "preprocess",
            "vision",
            "prefill",
            "TTFT",
            "decode",
            "end to end",
            "decode tok/s p50",
            "harness ms p50",
            "load s",
        ],
        rows,
    )
    lines += ["", "![latency per stage](latency_stages.png)", "", "## Notes", ""]
    for r in report["rows"]:
        cams = ", ".join(f"{n} {k}" for k, n in sorted(r["cameras"].items()))
        lines.append(
            f"- {r['name']}: inputs {r['inputs']}; cameras used: {cams}; backend {r['backend']}; {r['threads']}"
        )
    lines.append(
        "- harness overhead: the parent's wall time per request minus the pipeline's own end-to-end time "
        "(pickling images and replies between processes)"
    )
    if s["skipped"]:
        lines += ["- skipped lines (--skip-bad):"] + [f"  - {x}" for x in s["skipped"][:20]]
    return "\n".join(lines) + "\n"
