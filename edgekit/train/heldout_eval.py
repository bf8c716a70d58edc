"""Task accuracy of a checkpoint on held-out generated scenes, scored by the benchmark's rules, with intervals.

Greedy answers from the full-precision reference (transformers), thinking off; each task's headline score per
domain and overall with a bootstrap 95% interval, and for multiple choice the chance level (1 / options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgekit.bench.scoring import PRIMARY_METRIC, score_reply
from edgekit.bench.stats import bootstrap_mean
from edgekit.data.scene import TASK_ORDER
from edgekit.train.examples import DOMAINS, heldout_samples
from edgekit.train.recipe import Recipe

MAX_NEW_TOKENS = {
    "multiple_choice": 24,
    "short_answer": 12,
    "box_grounding": 32,
    "point_grounding": 24,
    "open_ended": 96,
}


def evaluate_heldout(
    checkpoint: str | Path,
    seed: int,
    per_task: int,
    tasks: tuple[str, ...] = TASK_ORDER,
    *,
    mismatched: bool = False,
    on_sample: Callable[[], None] | None = None,
) -> dict:
    """{'tasks': {task: {'metric', 'all': {mean, ci95, n}, <domain>: {...}, 'chance'?}}, 'replies': [...]}

    mismatched: each question asked about another held-out scene of its domain (the next one in the list), the control
    that says how much of a score the question alone earns (the answers' prior) rather than what the model sees."""
    return _evaluate(checkpoint, seed, per_task, tasks, (mismatched,), on_sample)[0]


def evaluate_heldout_with_control(
    checkpoint: str | Path,
    seed: int,
    per_task: int,
    tasks: tuple[str, ...] = TASK_ORDER,
    *,
    on_sample: Callable[[], None] | None = None,
) -> tuple[dict, dict]:
    """(evaluate_heldout's report, its mismatched-image control), the checkpoint loaded and the scenes drawn once."""
    report, control = _evaluate(checkpoint, seed, per_task, tasks, (False, True), on_sample)
    return report, control


def _evaluate(
    checkpoint,
    seed: int,
    per_task: int,
    tasks: tuple[str, ...],
    passes: tuple[bool, ...],
    on_sample: Callable[[], None] | None,
) -> list[dict]:
    """One report per pass (mismatched or not) over the same held-out scenes, from one load of the checkpoint."""
    ref, processor = _load(checkpoint)
    examples = heldout_samples(seed, per_task, tasks)
    common = {"seed": seed, "per_task_per_domain": per_task}
    return [_score(ref, processor, examples, mismatched, on_sample) | common for mismatched in passes]


def _load(checkpoint: str | Path):
    from edgekit.model.processor import load_processor_config
    from edgekit.runtime.torch_ref import TorchReference

    return TorchReference(checkpoint), load_processor_config(checkpoint)


def _score(ref, processor, examples: list, mismatched: bool, on_sample: Callable[[], None] | None) -> dict:
    from edgekit.train.batch import seen_frame

    tasks = tuple(dict.fromkeys(ex.sample.task for ex in examples))
    scores: dict[str, dict[str, list[float]]] = {t: {d: [] for d in DOMAINS} for t in tasks}
    chance: dict[str, list[float]] = {t: [] for t in tasks}
    replies = []
    images = _other_scenes(examples) if mismatched else [ex.image for ex in examples]
    for ex, image in zip(examples, images):
        s = ex.sample
        inputs = ref.prepare(s.question, [image])
        reply = ref.decode(ref.generate(inputs, max_new_tokens=MAX_NEW_TOKENS[s.task]))
        score = score_reply(s, reply, think=False, frame=seen_frame(processor, ex.image))["score"]
        scores[s.task][s.domain].append(score)
        if s.choices:
            chance[s.task].append(1.0 / len(s.choices))
        replies.append({"id": s.id, "reply": reply, "score": score})
        if on_sample:
            on_sample()
    out = {}
    for task, by_domain in scores.items():
        row = {"metric": PRIMARY_METRIC[task], "all": bootstrap_mean([v for d in DOMAINS for v in by_domain[d]])}
        row |= {d: bootstrap_mean(v) for d, v in by_domain.items()}
        if chance[task]:
            row["chance"] = sum(chance[task]) / len(chance[task])
        out[task] = row
    return {"tasks": out, "replies": replies, "mismatched": mismatched}


def _other_scenes(examples: list) -> list:
    """Each example's image replaced by the next example's of the same domain (every question has its own scene, so
    it is another scene wherever the domain has two questions or more)."""
    by_domain = {d: [i for i, ex in enumerate(examples) if ex.sample.domain == d] for d in DOMAINS}
    out = [ex.image for ex in examples]
    for idx in by_domain.values():
        for k, i in enumerate(idx):
            out[i] = examples[idx[(k + 1) % len(idx)]].image
    return out


def heldout_answer_loss(
    checkpoint: str | Path,
    seed: int,
    per_task: int,
    tasks: tuple[str, ...] = TASK_ORDER,
    *,
    choice_reply: str = Recipe.choice_reply,
) -> dict:
    """Teacher-forced cross-entropy of the reference answers (multiple choice as `choice_reply`) on held-out scenes
    (nats per answer token, averaged over samples), per task: a continuous measure of what training taught, also
    where greedy answers are still wrong."""
    import torch

    from edgekit.train.batch import answer_loss, collate, teacher_forced

    ref, processor = _load(checkpoint)
    pad = ref.checkpoint.token_ids.eos
    losses: dict[str, list[float]] = {t: [] for t in tasks}
    with torch.no_grad():
        for ex in heldout_samples(seed, per_task, tasks):
            losses[ex.sample.task].append(
                float(answer_loss(ref.model, collate([teacher_forced(ref, processor, ex, choice_reply)], pad)))
            )
    return {t: bootstrap_mean(v) for t, v in losses.items()}
