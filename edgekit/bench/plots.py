"""The benchmark's pictures, drawn from report.json alone (matplotlib, Agg: no display needed).

accuracy_vs_latency.png  task score and KL(FP‖variant) against end-to-end p50 latency, reference marked
latency_stages.png       p50 seconds per stage (preprocess, vision, prefill, decode), one bar per row
task_deltas.png          score difference to the reference per domain x task, with paired 95% intervals
"""

from __future__ import annotations

from pathlib import Path

PLOTS = ("accuracy_vs_latency.png", "latency_stages.png", "task_deltas.png")
STAGES = ("preprocess", "vision", "prefill", "decode")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_all(report: dict, out_dir: Path, write) -> list[str]:
    """Draw every plot; `write(path, png_bytes)` stores each (atomically). Returns the file names."""
    for name, draw in zip(PLOTS, (accuracy_vs_latency, latency_stages, task_deltas)):
        write(out_dir / name, draw(report))
    return list(PLOTS)


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def accuracy_vs_latency(report: dict) -> bytes:
    plt = _pyplot()
    fig, (ax_score, ax_kl) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in report["rows"]:
        x = row["latency"]["e2e_s"]["p50"]
        acc = row["accuracy"]["all"]
        lo, hi = acc["ci95"]
        style = (
            dict(marker="*", markersize=16, color="black")
            if row["role"] == "baseline"
            else dict(marker="o", markersize=8)
        )
        ax_score.errorbar(
            [x], [acc["mean"]], yerr=[[acc["mean"] - lo], [hi - acc["mean"]]], capsize=4, label=row["name"], **style
        )
        kl = 0.0 if row["role"] == "baseline" else row["fidelity"]["all"]["kl"]["mean"]
        ax_kl.plot([x], [kl], linestyle="none", label=row["name"], **style)
    ax_score.set(
        xlabel="end-to-end latency, p50 (s)", ylabel="task score (all samples, 95% CI)", title="accuracy vs latency"
    )
    positive = [
        r["fidelity"]["all"]["kl"]["mean"]
        for r in report["rows"]
        if r["role"] == "variant" and (r["fidelity"]["all"]["kl"]["mean"] or 0) > 0
    ]
    if positive:
        ax_kl.set_yscale("symlog", linthresh=min(positive) / 2)
    ax_kl.set(
        xlabel="end-to-end latency, p50 (s)",
        ylabel="mean per-token KL(FP‖variant), nats",
        title="fidelity vs latency (reference = 0)",
    )
    for ax in (ax_score, ax_kl):
        ax.grid(alpha=0.3)
    ax_kl.legend(fontsize=8, loc="best")
    return _png(fig)


def latency_stages(report: dict) -> bytes:
    plt = _pyplot()
    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.6))
    left = [0.0] * len(rows)
    names = [r["name"] for r in rows]
    for stage in STAGES:
        widths = [r["latency"][f"{stage}_s"]["p50"] for r in rows]
        ax.barh(names, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set(xlabel="seconds (p50 per stage)", title="where the time goes")
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def task_deltas(report: dict) -> bytes:
    plt = _pyplot()
    variants = [r for r in report["rows"] if r["role"] == "variant"]
    cells = [c for c in report["rows"][0]["accuracy"] if not c.endswith("/all") and c != "all"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(cells) * max(1, len(variants)) ** 0.5 + 1.8))
    step = 0.8 / max(1, len(variants))
    for i, row in enumerate(variants):
        ys, xs, err = [], [], [[], []]
        for j, cell in enumerate(cells):
            d = row["accuracy"].get(cell, {}).get("delta")
            if not d or d["mean"] is None:
                continue
            ys.append(j + (i - (len(variants) - 1) / 2) * step)
            xs.append(d["mean"])
            err[0].append(d["mean"] - d["ci95"][0])
            err[1].append(d["ci95"][1] - d["mean"])
        ax.errorbar(xs, ys, xerr=err, fmt="o", capsize=3, label=row["name"])
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(range(len(cells)), [f"{c} (n={report['rows'][0]['accuracy'][c]['n']})" for c in cells], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="score − reference score (paired 95% CI)", title="what each variant gave up, per task")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)
