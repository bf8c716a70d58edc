"""`edgekit bench`: the reference and every variant answer the same samples with the same prompts, greedily.

The verb is `run_bench(BenchConfig) -> report dict` (edgekit.bench.report builds it; docs/bench.md documents it).

Order of work, chosen so that latency is measured with one pipeline computing at a time:
  1. everything that can fail fast: samples parsed and their images opened (`file:line: what is wrong`), bundles
     verified and matched to the reference, memory estimated;
  2. one worker process per pipeline (edgekit.bench.worker), loaded once: the reference that is the baseline, and
     each variant; every worker answers one warm-up question, not counted;
  3. per sample, per input size the variants need: the baseline answers, then teacher-forces its own answer to get
     its next-token distributions; each variant answers, then teacher-forces the baseline's answer tokens, and the
     parent compares distributions (KL(FP‖variant), top-1) and scores the replies.
Images are read and resized here, once per sample and input size, so that the baseline and the variants see the
same pixels: a bundle's static size, or the processor's own resize when no bundle fixes one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.bench.variants import InputSpec, Variant
from edgekit.errors import EdgekitError

SCHEMA = "edgekit.bench/1"
BASELINE = "reference"


@dataclass(frozen=True)
class BenchConfig:
    variants: tuple[str, ...]
    reference: Path
    samples: str = "driving,embodied"
    split: str | None = "eval"  # None: every sample with a reference answer
    n: int | None = None  # None: all selected samples
    seed: int = 0
    think: bool = False
    max_new_tokens: int = 32
    threads: int | None = None  # None: a bundle's measured setting here (edgekit profile --tune), else every core
    reference_dtype: str = "float32"
    skip_bad: bool = False
    allow_different_source: bool = (
        False  # a bundle built from other weights than --reference (fidelity then means little)
    )
    warmup: int = 1
    version: int = 1

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise EdgekitError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        if self.n is not None and self.n < 1:
            raise EdgekitError(f"--n {self.n}: must be at least 1")
        if self.reference_dtype not in ("float32", "bfloat16"):
            raise EdgekitError(f"--reference-dtype {self.reference_dtype!r}: choose float32 or bfloat16")
        if self.split not in (None, "calib", "eval"):
            raise EdgekitError(f"--split {self.split!r}: choose eval, calib or all")
        from edgekit.runtime.settings import check_threads

        check_threads(self.threads)


@dataclass
class Record:
    """One variant's answer to one sample, with everything the report aggregates."""

    sample: str
    domain: str
    task: str
    variant: str
    text: str
    tokens: int
    scores: dict[str, float]
    timings: dict[str, float]
    harness_s: float  # the parent's wall time for the request minus the pipeline's own total
    cameras: str  # "all" | "front"
    inputs: str  # InputSpec.describe(): the input size it was answered at (pairs a variant with its baseline)
    kl_sum: float = 0.0  # KL(FP‖variant) summed over the baseline answer's teacher-forced positions
    kl_tokens: int = 0
    top1_hits: int = 0
    first_token_same: bool = True
    same_answer: bool = True
    fp_rouge_l: float | None = None  # open-ended: agreement with the full-precision answer
    extra: dict = field(default_factory=dict)


def run_bench(
    cfg: BenchConfig,
    *,
    on_progress: Callable[[str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    from edgekit.bench.report import build_report
    from edgekit.bench.sample_set import select_samples
    from edgekit.bench.variants import check_memory, reference_variant, resolve_variants
    from edgekit.bench.worker import Worker, spec_for

    cfg.validate()
    selection = select_samples(cfg.samples, split_name=cfg.split, n=cfg.n, seed=cfg.seed, skip_bad=cfg.skip_bad)
    variants = resolve_variants(
        list(cfg.variants), cfg.reference, dtype=cfg.reference_dtype, allow_different_source=cfg.allow_different_source
    )
    baseline = reference_variant(cfg.reference, dtype=cfg.reference_dtype, inputs=variants[0].inputs, name=BASELINE)
    memory = check_memory(variants, baseline.weight_bytes)
    groups = sorted({v.inputs for v in variants}, key=lambda s: (s.resolution or (0, 0), s.cameras))
    if on_start:
        on_start(len(selection.samples) * (len(groups) + len(variants)))

    workers: dict[str, Worker] = {}
    try:
        for v in [baseline] + variants:
            log(f"loading {v.name} ({v.precision})")
            workers[v.name] = Worker(v.name, spec_for(v.kind, v.path, threads=cfg.threads, dtype=cfg.reference_dtype))
        first = selection.samples[0]
        for _ in range(cfg.warmup):
            for v in [baseline] + variants:
                images, _ = frame_images(first, v.inputs, _reference_processor(cfg.reference))
                workers[v.name].call(
                    "answer",
                    question=first.question,
                    images=images,
                    think=cfg.think,
                    max_new_tokens=min(4, cfg.max_new_tokens),
                )
        records: list[Record] = []
        t_run = time.perf_counter()
        for sample in selection.samples:
            for spec in groups:
                records += _one_sample(
                    sample,
                    spec,
                    [v for v in variants if v.inputs == spec],
                    workers,
                    cfg,
                    baseline_name=BASELINE,
                    on_progress=on_progress,
                )
        run_s = time.perf_counter() - t_run
        memory_by_worker = {name: {**w.info, **w.call("rss")} for name, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    return build_report(
        cfg=asdict(cfg),
        variants=variants,
        baseline=baseline,
        records=records,
        selection=selection,
        memory=memory_by_worker,
        memory_check=memory,
        run_s=run_s,
        schema=SCHEMA,
    )


@lru_cache(maxsize=4)
def _reference_processor(reference: Path):
    from edgekit.model.processor import load_processor_config

    return load_processor_config(reference)


def frame_images(sample, spec: InputSpec, processor) -> tuple[list, str]:
    """The images one variant sees for a sample, resized as it will see them (the processor's own size rule and
    filter): all cameras when its graph takes that many, else the front camera (`image`, first of `images`)."""
    from edgekit.model.processor import target_size

    several = len(sample.images) > 1 and spec.cameras == len(sample.images)
    loaded = sample.load_images() if several else [sample.load_image()]
    out = []
    for im in loaded:
        resize_to = (spec.resolution[1], spec.resolution[0]) if spec.resolution else None
        h, w = target_size(im.height, im.width, processor, resize_to)
        out.append(im if im.size == (w, h) else im.resize((w, h), resample=processor.resample))
    return out, "all" if several else "front"


def _one_sample(
    sample, spec: InputSpec, group: list[Variant], workers, cfg: BenchConfig, *, baseline_name: str, on_progress
) -> list[Record]:
    from edgekit.metrics import rouge_l, token_kl
    from edgekit.bench.scoring import ImageFrame, score_reply, words

    processor = _reference_processor(cfg.reference)
    images, cameras = frame_images(sample, spec, processor)
    frame = ImageFrame(images[0].size, sample.image_size())
    ask = {"question": sample.question, "images": images, "think": cfg.think}

    base, base_s = _timed(workers[baseline_name], "answer", **ask, max_new_tokens=cfg.max_new_tokens)
    ref_logits = workers[baseline_name].call("teacher", **ask, answer_ids=base["token_ids"])  # [A+1, vocab]
    out = [
        _record(
            sample,
            baseline_name,
            base,
            base_s,
            cameras,
            spec,
            score_reply(sample, base["text"], think=cfg.think, frame=frame),
        )
    ]
    if on_progress:
        on_progress(f"{sample.id} · {baseline_name}")
    for v in group:
        ans, wall = _timed(workers[v.name], "answer", **ask, max_new_tokens=cfg.max_new_tokens)
        if ans["prompt_ids"] != base["prompt_ids"]:
            raise EdgekitError(
                f"{v.name}: its prompt for sample {sample.id!r} differs from the reference's "
                f"({len(ans['prompt_ids'])} vs {len(base['prompt_ids'])} tokens); the bundle and the "
                "reference must come from the same checkpoint and processor settings"
            )
        logits = workers[v.name].call("teacher", **ask, answer_ids=base["token_ids"])
        kl = token_kl(ref_logits, logits)  # [A+1]
        rec = _record(
            sample, v.name, ans, wall, cameras, spec, score_reply(sample, ans["text"], think=cfg.think, frame=frame)
        )
        rec.kl_sum, rec.kl_tokens = float(kl.sum()), int(kl.size)
        rec.top1_hits = int((np.argmax(ref_logits, -1) == np.argmax(logits, -1)).sum())
        rec.first_token_same = ans["token_ids"][:1] == base["token_ids"][:1]
        rec.same_answer = ans["token_ids"] == base["token_ids"]
        if sample.task == "open_ended":
            rec.fp_rouge_l = rouge_l(words(ans["text"]), words(base["text"]))
        out.append(rec)
        if on_progress:
            on_progress(f"{sample.id} · {v.name}")
    return out


def _timed(worker, op: str, **payload) -> tuple[dict, float]:
    t0 = time.perf_counter()
    reply = worker.call(op, **payload)
    return reply, time.perf_counter() - t0


def _record(sample, variant: str, ans: dict, wall: float, cameras: str, spec: InputSpec, scores: dict) -> Record:
    return Record(
        sample=sample.id,
        domain=sample.domain,
        task=sample.task,
        variant=variant,
        text=ans["text"],
        tokens=len(ans["token_ids"]),
        scores=scores,
        timings=ans["timings"],
        harness_s=max(0.0, wall - ans["timings"]["total"]),
        cameras=cameras,
        inputs=spec.describe(),
    )
