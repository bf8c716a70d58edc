"""The benchmark report: per-sample records aggregated per variant (schema `edgekit.bench/1`, docs/bench.md).

Per row (the baseline reference, then each variant):
  accuracy   per domain x task type: the task's headline score with its sample count and bootstrap 95% interval,
             and for variants the paired difference to the baseline on the same samples; box grounding adds IoU
  fidelity   per domain (variants only): mean per-token KL(FP‖variant) and top-1 agreement, teacher-forced on the
             baseline's own answer tokens; first-token and whole-answer agreement of the greedy answers; for
             open-ended answers ROUGE-L to the full-precision answer
  latency    per stage p50/p90/p99 over the samples (after warm-up): preprocess, vision, prefill, time to first
             token, decode tokens/s, end to end; end-to-end p50 as a ratio to the baseline's in this run
  memory     load time and peak RSS of the row's own worker process; the harness's own overhead per request
Pure arithmetic over records (edgekit.bench.stats); writing files is edgekit.bench.outputs.
"""

from __future__ import annotations

import os
import platform
from collections import defaultdict
from dataclasses import asdict

from edgekit.bench.scoring import PRIMARY_METRIC
from edgekit.bench.stats import bootstrap_mean, bootstrap_paired_difference, bootstrap_ratio, percentiles

ALL = "all"


def build_report(
    *, cfg: dict, variants, baseline, records, selection, memory: dict, memory_check: dict, run_s: float, schema: str
) -> dict:
    from edgekit import __version__

    by_row = defaultdict(list)
    for r in records:
        by_row[r.variant].append(r)
    base_by_key = {(r.sample, r.inputs): r for r in by_row[baseline.name]}
    rows = [_row(baseline, "baseline", by_row[baseline.name], {}, memory)]
    rows += [_row(v, "variant", by_row[v.name], base_by_key, memory) for v in variants]
    base_p50 = rows[0]["latency"]["e2e_s"]["p50"]
    for row in rows:
        row["latency"]["e2e_p50_ratio_to_reference"] = row["latency"]["e2e_s"]["p50"] / base_p50 if base_p50 else None
    counts = defaultdict(int)
    for s in selection.samples:
        counts[f"{s.domain}/{s.task}"] += 1
    ranked = sorted((r for r in rows if r["role"] == "variant"), key=lambda r: r["fidelity"][ALL]["kl"]["mean"] or 0.0)
    return {
        "schema": schema,
        "edgekit": __version__,
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in cfg.items()},
        "samples": {
            "n": len(selection.samples),
            "files": [str(f) for f in selection.files],
            "by_domain_task": dict(sorted(counts.items())),
            "skipped_bad": len(selection.skipped),
            "skipped": selection.skipped[:100],
        },
        "rows": rows,
        "ranking_by_kl": [r["name"] for r in ranked],
        "memory_check": memory_check,
        "run_s": run_s,
        "records": [asdict(r) for r in records],
    }


def machine_info() -> dict:
    import psutil

    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _cells(records) -> dict[str, list]:
    """'domain/task', 'domain/all' and 'all' -> records, in a stable order."""
    cells = defaultdict(list)
    for r in records:
        cells[f"{r.domain}/{r.task}"].append(r)
        cells[f"{r.domain}/{ALL}"].append(r)
        cells[ALL].append(r)
    return dict(sorted(cells.items(), key=lambda kv: (kv[0] == ALL, kv[0].endswith("/" + ALL), kv[0])))


def _seed(name: str) -> int:
    return sum(name.encode()) % 1000  # fixed per cell: the same records give the same interval every time


def accuracy(records, base_by_key: dict) -> dict:
    out = {}
    for cell, recs in _cells(records).items():
        task = cell.split("/")[-1]
        entry = {
            "metric": PRIMARY_METRIC.get(task, "score"),
            **bootstrap_mean([r.scores["score"] for r in recs], seed=_seed(cell)),
        }
        if task == "box_grounding":
            entry["iou"] = bootstrap_mean([r.scores["iou"] for r in recs], seed=_seed(cell + "iou"))
        if base_by_key:
            base = [base_by_key[(r.sample, r.inputs)].scores["score"] for r in recs]
            entry["reference_mean"] = sum(base) / len(base)
            entry["delta"] = bootstrap_paired_difference(
                [r.scores["score"] for r in recs], base, seed=_seed(cell + "d")
            )
        out[cell] = entry
    return out


def fidelity(records) -> dict:
    out = {}
    for cell, recs in _cells(records).items():
        if cell.count("/") and not cell.endswith("/" + ALL):
            continue  # per domain and overall
        entry = {
            "kl": bootstrap_ratio([r.kl_sum for r in recs], [r.kl_tokens for r in recs], seed=_seed(cell + "kl")),
            "top1": bootstrap_ratio([r.top1_hits for r in recs], [r.kl_tokens for r in recs], seed=_seed(cell + "t")),
            "first_token": bootstrap_mean([float(r.first_token_same) for r in recs], seed=_seed(cell + "f")),
            "whole_answer": bootstrap_mean([float(r.same_answer) for r in recs], seed=_seed(cell + "w")),
            "tokens": sum(r.kl_tokens for r in recs),
        }
        open_ended = [r.fp_rouge_l for r in recs if r.fp_rouge_l is not None]
        if open_ended:
            entry["open_ended_rouge_l_to_fp"] = bootstrap_mean(open_ended, seed=_seed(cell + "o"))
        out[cell.replace("/" + ALL, "")] = entry
    return out


def latency(records) -> dict:
    t = [r.timings for r in records]
    out = {f"{stage}_s": percentiles([x[stage] for x in t]) for stage in ("preprocess", "vision", "prefill", "decode")}
    out["ttft_s"] = percentiles([x["preprocess"] + x["vision"] + x["prefill"] for x in t])
    out["e2e_s"] = percentiles([x["total"] for x in t])
    rates = [(r.tokens - 1) / r.timings["decode"] for r in records if r.tokens > 1 and r.timings["decode"] > 0]
    out["decode_tokens_per_s"] = percentiles(rates)
    out["tokens_per_answer"] = percentiles([r.tokens for r in records])
    out["harness_overhead_s"] = percentiles([r.harness_s for r in records])
    return out


def _row(v, role: str, records, base_by_key: dict, memory: dict) -> dict:
    mem = memory.get(v.name, {})
    cameras = defaultdict(int)
    for r in records:
        cameras[r.cameras] += 1
    row = {
        "name": v.name,
        "role": role,
        "kind": v.kind,
        "path": str(v.path),
        "precision": v.precision,
        "backend": mem.get("backend"),
        "threads": mem.get("threads"),
        "inputs": v.inputs.describe(),
        "cameras": dict(cameras),
        "load_s": mem.get("load_s"),
        "peak_rss_mb": mem.get("peak_rss_mb"),
        "accuracy": accuracy(records, base_by_key),
        "latency": latency(records),
    }
    if role == "variant":
        row["fidelity"] = fidelity(records)
    return row
