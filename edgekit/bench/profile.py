"""`edgekit profile`: latency of one bundle on this machine, on synthetic inputs of chosen sizes.

Many runs of one question (a random image of --image-size per camera, a question of --prompt-tokens tokens,
exactly --gen-tokens generated tokens) through the bundle in its own worker process (edgekit.bench.worker):
  - per-stage percentiles, jitter (p99 / p50 of end to end), decode tokens/s;
  - decode speed as a fraction of this machine's roofline: read bandwidth measured first (edgekit.bench.roofline)
    over the bytes one token reads from the bundle's GGUF at the run's mean position; next to the bound `edgekit
    plan` gave from the target's data sheet;
  - on a Jetson, tegrastats sampled during the runs (RAM, GR3D_FREQ, EMC_FREQ, every rail) and energy per token;
  - `--background-load K`: the same runs again while K busy processes compute on the same cores (a robot's host is
    never idle): slowdown and jitter under load;
  - `--tune`: thread count x OpenMP wait policy measured (under the same load), the fastest recorded for this
    machine and bundle (edgekit.runtime.settings), which `open_bundle` and `edgekit bench` then use.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.runtime.settings import WAIT_POLICIES, ThreadSettings

SCHEMA = "edgekit.profile/1"
_WORDS = (
    "vehicle lane pedestrian crossing signal left right ahead brake slow merge truck cyclist parked "
    "robot gripper table cup shelf drawer handle place pick reach open close behind front near far"
).split()


@dataclass(frozen=True)
class ProfileConfig:
    bundle: Path
    runs: int = 20
    warmup: int = 2
    image_size: tuple[int, int] | None = None  # (width, height) of the synthetic camera images; None: the bundle's
    prompt_tokens: int = 64  # tokens of question text (the prompt adds the chat template and the image tokens)
    gen_tokens: int = 64
    threads: int | None = None  # None: the recorded setting for this bundle here, else every core
    background_load: int = 0
    tune: bool = False
    tune_runs: int = 5
    seed: int = 0
    version: int = 1

    def validate(self) -> None:
        for name in ("runs", "prompt_tokens", "gen_tokens", "tune_runs"):
            if getattr(self, name) < 1:
                raise EdgekitError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be at least 1")
        if self.warmup < 0 or self.background_load < 0:
            raise EdgekitError("--warmup and --background-load must be 0 or more")
        from edgekit.runtime.settings import check_threads

        check_threads(self.threads)


def synthetic_inputs(bundle: Path, manifest: dict, cfg: ProfileConfig) -> tuple[str, list]:
    """A question of about cfg.prompt_tokens tokens and one random RGB image per camera the bundle takes."""
    import numpy as np
    from PIL import Image

    from edgekit.model.prompt import load_tokenizer

    rng = np.random.default_rng(cfg.seed)
    tokenizer = load_tokenizer(bundle / manifest["tokenizer_dir"] / "tokenizer.json")
    words: list[str] = []
    while len(tokenizer.encode(" ".join(words)).ids) < cfg.prompt_tokens:
        words.append(str(rng.choice(_WORDS)))
    ids = tokenizer.encode(" ".join(words)).ids[: cfg.prompt_tokens]
    question = tokenizer.decode(ids)
    w, h = cfg.image_size or tuple(manifest["parts"]["vision"]["resolution"])
    cameras = int(manifest["parts"]["vision"].get("images", 1))
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for _ in range(cameras)]
    return question, images


class BackgroundLoad:
    """K processes that keep a core busy each (pure-Python spin), started and stopped around a block."""

    def __init__(self, k: int):
        self.k, self.procs = k, []

    def __enter__(self) -> "BackgroundLoad":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.k)]
        time.sleep(0.2 if self.k else 0)  # let the scheduler see them
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def _runs(worker, question: str, images: list, cfg: ProfileConfig, n: int, phase: str, on_run) -> list[dict]:
    out = []
    for i in range(n):
        t0 = time.monotonic()
        a = worker.call(
            "answer", question=question, images=images, think=False, max_new_tokens=cfg.gen_tokens, stop_at_end=False
        )
        out.append(
            {
                "phase": phase,
                "run": i,
                "t0": t0,
                "t1": time.monotonic(),
                "tokens": len(a["token_ids"]),
                "prompt_tokens": len(a["prompt_ids"]),
                **{f"{k}_s": v for k, v in a["timings"].items()},
            }
        )
        if on_run:
            on_run(phase)
    return out


def _measure(
    bundle: Path, settings: ThreadSettings | None, question, images, cfg, n: int, phase: str, on_run, load: int = 0
) -> tuple[list[dict], dict]:
    """Runs in a fresh worker (the wait policy only applies before llama.cpp loads), after warm-up."""
    from edgekit.bench.worker import Worker, spec_for

    env = settings.env() if settings else {}
    worker = Worker(phase, spec_for("bundle", bundle, threads=settings.threads if settings else None, env=env))
    try:
        with BackgroundLoad(load):
            _runs(worker, question, images, cfg, cfg.warmup, f"{phase}:warmup", None)
            runs = _runs(worker, question, images, cfg, n, phase, on_run)
    finally:
        worker.close()
    return runs, worker.info


def stage_summary(runs: list[dict]) -> dict:
    from edgekit.bench.stats import percentiles

    out = {k: percentiles([r[k] for r in runs]) for k in ("preprocess_s", "vision_s", "prefill_s", "decode_s")}
    out["ttft_s"] = percentiles([r["preprocess_s"] + r["vision_s"] + r["prefill_s"] for r in runs])
    out["e2e_s"] = percentiles([r["total_s"] for r in runs])  # named as in `edgekit bench`
    out["decode_tokens_per_s"] = percentiles(
        [(r["tokens"] - 1) / r["decode_s"] for r in runs if r["tokens"] > 1 and r["decode_s"] > 0]
    )
    p50 = out["e2e_s"]["p50"]
    out["jitter_p99_over_p50"] = out["e2e_s"]["p99"] / p50 if p50 else None
    return out


def tune_candidates(cores: int) -> list[ThreadSettings]:
    counts = sorted({1, max(1, cores // 2), cores})
    return [ThreadSettings(t, w) for t in counts for w in (None, *WAIT_POLICIES)]


def run_profile(
    cfg: ProfileConfig,
    *,
    log: Callable[[str], None] = lambda s: None,
    on_start: Callable[[int], None] | None = None,
    on_run: Callable[[str], None] | None = None,
) -> dict:
    from edgekit.bench.report import machine_info
    from edgekit.bench.roofline import gguf_bytes_per_token, read_bandwidth_fresh
    from edgekit.bench.tegrastats import TegraStats, summarize
    from edgekit.bundle.manifest import verify_bundle
    from edgekit.cores import available_cores
    from edgekit.runtime.settings import lookup, record

    cfg.validate()
    report = verify_bundle(cfg.bundle, deep=False)
    if not report.ok:
        raise EdgekitError(f"{cfg.bundle}: bundle does not verify: {report.errors[0]}")
    manifest = report.manifest
    if manifest["parts"].get("decoder", {}).get("format") != "gguf":
        raise EdgekitError(f"{cfg.bundle}: its decoder is not GGUF; profile it on its device with its runtime")
    seal, cores = manifest["seal"]["sha256"], available_cores()
    question, images = synthetic_inputs(cfg.bundle, manifest, cfg)
    candidates = tune_candidates(cores) if cfg.tune else []
    if on_start:
        on_start(len(candidates) * cfg.tune_runs + cfg.runs * (2 if cfg.background_load else 1))

    tuning = None
    if cfg.tune:
        trials = []
        for c in candidates:
            log(f"tuning: {c.describe()}")
            runs, _ = _measure(
                cfg.bundle,
                c,
                question,
                images,
                cfg,
                cfg.tune_runs,
                f"tune {c.describe()}",
                on_run,
                load=cfg.background_load,
            )
            e2e = stage_summary(runs)["e2e_s"]
            trials.append({**asdict(c), "e2e_p50_s": e2e["p50"], "e2e_p99_s": e2e["p99"]})
        best = min(trials, key=lambda t: (t["e2e_p50_s"], t["e2e_p99_s"]))
        chosen = ThreadSettings(best["threads"], best["omp_wait_policy"])
        where = record(seal, chosen, {"background_load": cfg.background_load, "trials": trials, "runs": cfg.tune_runs})
        tuning = {"trials": trials, "chosen": asdict(chosen), "recorded_in": str(where)}
    settings = ThreadSettings(cfg.threads) if cfg.threads else lookup(seal)

    log("measuring read bandwidth")
    bandwidth = read_bandwidth_fresh(settings.threads if settings else cores)
    with TegraStats() as tegra:
        alone, info = _measure(cfg.bundle, settings, question, images, cfg, cfg.runs, "alone", on_run)
        power = (
            summarize(
                tegra.between(alone[0]["t0"], alone[-1]["t1"]),
                seconds=alone[-1]["t1"] - alone[0]["t0"],
                tokens=sum(r["tokens"] for r in alone),
            )
            if tegra.available
            else None
        )
    loaded = None
    if cfg.background_load:
        loaded, _ = _measure(
            cfg.bundle,
            settings,
            question,
            images,
            cfg,
            cfg.runs,
            f"load {cfg.background_load}",
            on_run,
            load=cfg.background_load,
        )
    summary = stage_summary(alone)
    positions = alone[0]["prompt_tokens"] + cfg.gen_tokens // 2
    bpt = gguf_bytes_per_token(cfg.bundle / manifest["parts"]["decoder"]["path"], positions)
    roof = bandwidth / bpt
    out = {
        "schema": SCHEMA,
        "machine": machine_info(),
        "config": {**asdict(cfg), "bundle": str(cfg.bundle)},
        "bundle": {
            "path": str(cfg.bundle),
            "precision": manifest["parts"]["decoder"].get("precision"),
            "vision": manifest["parts"]["vision"].get("precision"),
            "seal": seal,
        },
        "threads": info.get("threads"),
        "prompt_tokens": alone[0]["prompt_tokens"],
        "alone": summary,
        "roofline": {
            "read_bandwidth_gb_s": bandwidth / 1e9,
            "bytes_per_token_mb": bpt / 1e6,
            "mean_position": positions,
            "tokens_per_s_bound": roof,
            "fraction": (summary["decode_tokens_per_s"]["p50"] or 0) / roof,
            "plan_tokens_per_s_bound": manifest.get("plan", {}).get("decode_tokens_per_s_bound"),
            "how": "bitwise-OR reduction over 1 GiB on the decoder's thread count, best of 5, fresh process; "
            "bytes = every GGUF tensor once (one embedding row) + f16 KV at the mean position",
        },
        "tegrastats": power
        if power is not None
        else "tegrastats not found: no power, clock or RAM readings (not a Jetson, or not on PATH)",
        "tuning": tuning,
        "runs": alone + (loaded or []),
    }
    if loaded:
        under = stage_summary(loaded)
        out["under_load"] = {
            "processes": cfg.background_load,
            **under,
            "slowdown_e2e_p50": under["e2e_s"]["p50"] / summary["e2e_s"]["p50"],
            "decode_tokens_per_s_ratio": (under["decode_tokens_per_s"]["p50"] or 0)
            / (summary["decode_tokens_per_s"]["p50"] or 1),
        }
    return out


CSV_KEYS = ["phase", "run", "prompt_tokens", "tokens", "preprocess_s", "vision_s", "prefill_s", "decode_s", "total_s"]


def claim_csv(path: Path, bundle: Path, *, force: bool) -> None:
    """Before any run: --csv is not inside the bundle, and replaces only an earlier profile CSV (or --force)."""
    from edgekit.outputs import claim_file, starts_with

    claim_file(path, [bundle], force=force, ours=starts_with((",".join(CSV_KEYS) + "\n").encode()), flag="--csv")


def write_csv(runs: list[dict], path: Path) -> None:
    import csv
    import io

    from edgekit.atomic import write_text

    keys = CSV_KEYS
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(runs)
    write_text(path, buf.getvalue())
