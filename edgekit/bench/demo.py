"""`edgekit demo`: the whole path on a generated checkpoint, next to the full-precision reference.

make-tiny -> plan -> build (cpu, int4) -> answer one driving and one embodied built-in sample
through the bundle and through transformers, and compare: greedy answer agreement, KL(FP||bundle)
of the first answer token's distribution, and latency per stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.metrics import kl_divergence, token_agreement


@dataclass
class DemoRow:
    sample_id: str
    domain: str
    question: str
    reference: str
    bundle: str
    same_answer: bool
    token_agreement: float  # fraction of positions where the greedy tokens match
    first_token_kl: float
    reference_s: float
    bundle_s: float


def run_demo(
    workdir: Path, *, preset: str = "tiny", max_new_tokens: int = 16, log: Callable[[str], None] = print
) -> tuple[dict, list[DemoRow]]:
    import time

    from edgekit.bundle.build import BuildConfig, build_bundle
    from edgekit.runtime.bundle_pipeline import open_bundle
    from edgekit.data.samples import load_samples
    from edgekit.data.selection import split
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.fixtures import make_tiny
    from edgekit.targets.plan import make_plan
    from edgekit.runtime.pipeline import ReferencePipeline
    from edgekit.targets import get_target

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / f"checkpoint-{preset}"
    if not (ckpt / "config.json").is_file():
        log(f"making a random-weight {preset} checkpoint in {ckpt}")
        make_tiny(ckpt, preset)
    ck = open_checkpoint(ckpt)
    target = get_target("cpu")
    plan = make_plan(ck.text, ck.vision, {n: i.shape for n, i in ck.tensors.items()}, target, "int4")
    log(
        f"plan: {plan.total_gb:.3f} GB of {plan.memory_gb:g} GB; decode bound {plan.decode_tokens_per_s_bound:.0f} tokens/s"
    )
    bundle = workdir / "bundle-cpu-int4"
    build_bundle(
        ckpt,
        bundle,
        BuildConfig(target="cpu", precision="int4"),
        on_stage=lambda name, status: status != "running" and log(f"  build: {name} {status}"),
    )
    pipe = open_bundle(bundle)
    ref = ReferencePipeline(ckpt)
    h, w = pipe.resize_to

    rows = []
    for domain in ("driving", "embodied"):
        sample = split(load_samples(domain), "eval")[0]
        # The reference sees the image at the bundle's static size, so both answer the same input.
        image = sample.load_image().resize((w, h), resample=3)  # bicubic, as the processor resizes
        t0 = time.perf_counter()
        r = ref.answer(sample.question, [image], max_new_tokens=max_new_tokens)
        t1 = time.perf_counter()
        b = pipe.answer(sample.question, [image], max_new_tokens=max_new_tokens)
        t2 = time.perf_counter()
        kl = kl_divergence(
            _reference_next_logits(ref, sample.question, image), _bundle_next_logits(pipe, sample.question, image)
        )
        rows.append(
            DemoRow(
                sample.id,
                domain,
                sample.question,
                r.text,
                b.text,
                r.token_ids == b.token_ids,
                token_agreement(r.token_ids, b.token_ids),
                kl,
                t1 - t0,
                t2 - t1,
            )
        )
    pipe.close()
    return {"plan": plan.as_dict(), "bundle": str(bundle), "checkpoint": str(ckpt)}, rows


def _reference_next_logits(ref, question: str, image) -> np.ndarray:
    inputs = ref.ref.prepare(question, [image])
    return ref.ref.logits(inputs)[-1].numpy()


def _bundle_next_logits(pipe, question: str, image) -> np.ndarray:
    from edgekit.model.prompt import prepare_inputs
    from edgekit.runtime.prompt_segments import ImageEmbedding

    inputs = prepare_inputs(pipe.assets, question, [image], think=False, resize_to=pipe.resize_to)
    merge = pipe.assets.spatial_merge_size
    _, gh, gw = (int(x) for x in inputs.image_grid_thw[0])
    emb = pipe.vision.encode(inputs.pixel_values, inputs.image_grid_thw)
    return pipe.decoder.prefill(
        inputs.input_ids.tolist(), [ImageEmbedding(np.ascontiguousarray(emb), (gh // merge, gw // merge))]
    )[-1]
