"""Where a report goes: `--out` must be absent, empty, or an earlier report (nothing else of the user's is
touched), and every file is written atomically: report.json, report.md and the plots."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError

REPORT_JSON, REPORT_MD = "report.json", "report.md"


def report_files() -> set[str]:
    from edgekit.bench.plots import PLOTS

    return {REPORT_JSON, REPORT_MD, *PLOTS}


def check_out_dir(out: Path, inputs=()) -> None:
    """Refuse, before any work, an --out inside an input (a bundle, the reference, the samples) or holding anything
    but an earlier edgekit report."""
    from edgekit.outputs import refuse_overlap

    refuse_overlap(out, inputs)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise EdgekitError(f"--out {out}: exists and is not a directory; give a new or empty directory")
    if not out.exists():
        return
    present = {p.name for p in out.iterdir()}
    if not present:
        return
    stray = sorted(present - report_files())
    ours = (out / REPORT_JSON).is_file() and _is_report(out / REPORT_JSON)
    if stray or not ours:
        raise EdgekitError(
            f"--out {out}: holds {', '.join(stray[:3]) or 'files'} that are not an edgekit report; "
            "give a new or empty directory (an earlier report there is replaced)"
        )


def _is_report(path: Path) -> bool:
    from edgekit.outputs import is_json_with_schema

    try:
        return is_json_with_schema("edgekit.bench/")(path)
    except Exception:  # unreadable, not JSON: not a report
        return False


def write_report(report: dict, out: Path) -> list[Path]:
    from edgekit.atomic import write_bytes, write_json, write_text
    from edgekit.bench.markdown import render
    from edgekit.bench.plots import draw_all

    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).unlink(missing_ok=True)  # an earlier report's: never mixed with the new plots
    names = draw_all(report, out, write_bytes)
    write_text(out / REPORT_MD, render(report))
    write_json(out / REPORT_JSON, report)  # last: a directory with report.json is a finished report
    return [out / REPORT_JSON, out / REPORT_MD] + [out / n for n in names]
