"""C++ host vs `edgekit run --bundle`: end-to-end latency on the same question, measured side by side.

Each round runs, one after the other on an idle machine: the C++ example (hosts/cpp, `edgekit-host --json`),
`edgekit run --bundle --vision mmproj --json` (the same llama.cpp path from Python) and `edgekit run --bundle
--json` (ONNX Runtime vision + llama.cpp decoder). Reported per program: the answer's own end-to-end time (image
in -> last token, models already loaded) and the process's wall time (start-up and loading included), medians over
the rounds and as ratios to the C++ host in the same run; and whether the answers agree.

Regenerate:  python benchmarks/bench_cpp_host.py --preset medium --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


def timed(cmd: list[str]) -> tuple[dict, float]:
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgekit-bench-cpp-host"))
    ap.add_argument("--bundle", type=Path, default=None, help="a GGUF bundle (default: build the preset's cpu int4)")
    ap.add_argument("--host-build", type=Path, default=REPO / "build" / "host")
    ap.add_argument("--image", type=Path, default=REPO / "edgekit" / "data" / "assets" / "embodied_0_003.png")
    ap.add_argument("--question", default="Which object is closest to the robot gripper?")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    if not (args.host_build / "edgekit-host").is_file():
        subprocess.run(["bash", str(REPO / "scripts" / "build_cpp_host.sh"), str(args.host_build)], check=True)
    bundle = args.bundle
    if bundle is None:
        from edgekit.bundle.build import BuildConfig, build_bundle
        from edgekit.model.fixtures import make_tiny

        args.workdir.mkdir(parents=True, exist_ok=True)
        ckpt = args.workdir / f"checkpoint-{args.preset}"
        if not (ckpt / "config.json").is_file():
            make_tiny(ckpt, args.preset)
        bundle = args.workdir / "bundle-cpu-int4"
        if not (bundle / "edgekit.json").is_file():
            build_bundle(
                ckpt, bundle, BuildConfig(target="cpu", precision="int4"), calib_cache=args.workdir / "calibration"
            )
    common = ["--max-new-tokens", str(args.tokens), "--threads", str(args.threads), "--json"]
    programs = {
        "C++ host (edgekit-host)": [
            str(args.host_build / "edgekit-host"),
            str(bundle),
            str(args.image),
            args.question,
            *common,
        ],
        "edgekit run --bundle --vision mmproj": [
            EDGEKIT,
            "run",
            "--bundle",
            str(bundle),
            "--vision",
            "mmproj",
            "--image",
            str(args.image),
            "--prompt",
            args.question,
            *common,
        ],
        "edgekit run --bundle (ONNX vision)": [
            EDGEKIT,
            "run",
            "--bundle",
            str(bundle),
            "--image",
            str(args.image),
            "--prompt",
            args.question,
            *common,
        ],
    }
    answer_s: dict[str, list[float]] = {k: [] for k in programs}
    wall_s: dict[str, list[float]] = {k: [] for k in programs}
    ids: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for name, cmd in programs.items():
            out, wall = timed(cmd)
            answer_s[name].append(out["timings_ms"]["total"] / 1e3 if "timings_ms" in out else out["timings"]["total"])
            wall_s[name].append(wall)
            ids[name] = out["token_ids"]
    base = "C++ host (edgekit-host)"
    a0, w0 = statistics.median(answer_s[base]), statistics.median(wall_s[base])
    print(f"bundle {bundle}, {args.tokens} new tokens, {args.threads} threads, median of {args.rounds} rounds")
    print("| program | answer end to end, s (× C++) | process wall time, s (× C++) | same tokens as C++ |")
    print("|---|---|---|---|")
    for name in programs:
        a, w = statistics.median(answer_s[name]), statistics.median(wall_s[name])
        print(
            f"| {name} | {a:.3f} ({a / a0:.2f}) | {w:.2f} ({w / w0:.2f}) | {'yes' if ids[name] == ids[base] else 'no'} |"
        )


if __name__ == "__main__":
    main()
