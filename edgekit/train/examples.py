"""Questions about generated scenes, as training examples and held-out samples.

Training scenes and held-out scenes come from the synthetic generators under different seed namespaces
("train/<seed>", "heldout/<seed>"), and both differ from the shipped sample sets' integer seeds: a scene is a
pure function of (namespace, domain, index), so no held-out or benchmark image is ever trained on.

Grounding answers are in the pixels of the image the model sees (Qwen2.5-VL's absolute coordinates after the
processor's resize), which is what the benchmark's scoring maps back to the original image.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

from edgekit.bench.scoring import ImageFrame
from edgekit.data.reference_answers import format_answer_for_teacher_forcing
from edgekit.data.samples import Sample
from edgekit.data.scene import TASK_ORDER
from edgekit.data.synthetic import make_scene
from edgekit.train.recipe import Recipe

DOMAINS = ("driving", "embodied")


def train_namespace(seed: int) -> str:
    return f"train/{seed}"


def heldout_namespace(seed: int) -> str:
    return f"heldout/{seed}"


@dataclass(frozen=True)
class SceneSample:
    """One question about one generated scene: the sample (as the benchmark scores it) and its image."""

    sample: Sample
    image: object  # PIL.Image RGB
    focus: tuple[int, int, int, int] | None = None  # Question.focus: the one object the answer depends on


def scene_sample(namespace: str, domain: str, index: int, task: str) -> SceneSample:
    scene = make_scene(domain, namespace, index)
    q = next(q for q in scene.questions if q.task == task)
    sample = Sample(
        id=f"{namespace}/{domain}/{index}/{task}",
        domain=domain,
        task=task,
        image=Path(f"<generated {namespace} {domain} scene {index}>"),  # never opened: the image is in memory
        question=q.question,
        answer=q.answer,
        split=namespace.split("/")[0],
        choices=tuple(q.choices) if q.choices is not None else None,
        answer_text=q.answer_text,
        box=tuple(q.box) if q.box is not None else None,
        point=tuple(q.point) if q.point is not None else None,
    )
    return SceneSample(sample, scene.image, q.focus)


def seen_answer(sample: Sample, frame: ImageFrame, choice_reply: str = Recipe.choice_reply) -> str:
    """The reply the model is trained to give: the reference answer as edgekit formats it for teacher forcing,
    with boxes and points in the seen image's pixels; a multiple-choice answer as `choice_reply` says (recipe.py)."""
    if sample.task == "multiple_choice" and choice_reply == "option_text":
        return sample.answer_text or sample.choices[ord(sample.answer) - ord("A")]
    sx, sy = frame.seen[0] / frame.original[0], frame.seen[1] / frame.original[1]
    scaled = dataclasses.replace(
        sample,
        box=None
        if sample.box is None
        else (sample.box[0] * sx, sample.box[1] * sy, sample.box[2] * sx, sample.box[3] * sy),
        point=None if sample.point is None else (sample.point[0] * sx, sample.point[1] * sy),
    )
    if sample.task == "box_grounding":
        scaled = dataclasses.replace(scaled, answer=list(scaled.box))
    if sample.task == "point_grounding":
        scaled = dataclasses.replace(scaled, answer=list(scaled.point))
    return format_answer_for_teacher_forcing(scaled)


def training_sample(seed: int, index: int, task_weights: dict[str, float]) -> SceneSample:
    """Training example `index` of a run: domains alternate, the task is drawn with `task_weights` from a stream
    that depends only on (seed, index), and its scene is the index-th of the training namespace."""
    rng = random.Random(f"edgekit-train/{seed}/{index}")
    tasks = [t for t in TASK_ORDER if task_weights.get(t, 0) > 0]
    task = rng.choices(tasks, weights=[task_weights[t] for t in tasks])[0]
    domain = DOMAINS[index % len(DOMAINS)]
    return scene_sample(train_namespace(seed), domain, index // len(DOMAINS), task)


def heldout_samples(seed: int, per_task: int, tasks: tuple[str, ...] = TASK_ORDER) -> list[SceneSample]:
    """`per_task` held-out questions of each task in `tasks` for each domain, each from its own scene."""
    out = []
    for domain in DOMAINS:
        for task in tasks:
            for k in range(per_task):
                out.append(
                    scene_sample(heldout_namespace(seed), domain, k * len(TASK_ORDER) + TASK_ORDER.index(task), task)
                )
    return out
