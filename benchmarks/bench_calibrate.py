"""Calibration time and peak RSS against decoder depth: memory must not grow with the number of layers.

Generated checkpoints of the medium preset (vocab 151,680) with 2, 4 and 8 decoder layers; each
calibration runs in a fresh process (peak RSS = VmHWM), GPTQ onto Q4_K, the same samples.

Regenerate:  python benchmarks/bench_calibrate.py --layers 2 4 8 --n 8 --json bench_calibrate.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gguf import PEAK_RSS, make_checkpoint, run_child  # noqa: E402

CHILD = (
    r"""
import json, sys, time
from edgekit.quant.calibrate import QuantConfig, calibrate
t = time.perf_counter()
calibrate(sys.argv[1], QuantConfig(method=sys.argv[2], grid="gguf:q4_k", n_samples=int(sys.argv[3])), sys.argv[4])
print(json.dumps({"seconds": time.perf_counter() - t, "peak_rss_mb": %s}))
"""
    % PEAK_RSS
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--n", type=int, default=8, help="calibration samples")
    ap.add_argument("--method", default="gptq")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgekit-bench-calib-"))
    rows = []
    for layers in args.layers:
        ckpt = make_checkpoint(work, args.preset, layers)
        r = run_child(CHILD, str(ckpt), args.method, str(args.n), str(work / f"cache-{layers}"))
        rows.append({"layers": layers, **r, "seconds_per_layer": r["seconds"] / layers})
        print(
            f"{layers:>3} layers: {r['seconds']:7.1f} s ({r['seconds'] / layers:.1f} s/layer), peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    report = {
        "command": " ".join(sys.argv),
        "preset": args.preset,
        "method": args.method,
        "samples": args.n,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
