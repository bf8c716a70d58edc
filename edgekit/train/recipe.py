"""What a training run does, as one value: the preset it starts from, the data mixture and the optimiser's settings.

Its length (steps or minutes) is not part of it: the learning-rate schedule (linear warm-up, then inverse square
root) does not depend on where a run stops, so a run of N steps is the first N steps of any longer run with the
same recipe, and a run stopped by the clock can be continued or reproduced step for step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from edgekit.data.scene import TASK_ORDER
from edgekit.errors import EdgekitError

TRAIN_MAX_PIXELS = 64 * 28 * 28  # about 280x168 for a driving frame: a lit lamp is still 7 px across
# Short answers teach the vision tower fastest per token; grounding and descriptions keep every task in the mix.
DEFAULT_TASK_WEIGHTS = {
    "multiple_choice": 0.4,
    "short_answer": 0.25,
    "box_grounding": 0.1,
    "point_grounding": 0.1,
    "open_ended": 0.15,
}
# How a trained model answers a multiple-choice question. "option_text": the chosen option's words ("Red"), which the
# benchmark scores as VLMEvalKit does (can_infer_text). "letter_and_text": "B. Red", the letter scored first; tying a
# letter to an option is a copying circuit the tiny preset had not formed after 14,000 examples (README "A trained
# checkpoint"), so its answers stay at chance whatever it sees.
CHOICE_REPLIES = ("option_text", "letter_and_text")


@dataclass(frozen=True)
class Recipe:
    preset: str
    seed: int = 0
    batch: int = 8
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.0
    clip: float = 1.0
    max_pixels: int = TRAIN_MAX_PIXELS
    task_weights: tuple[tuple[str, float], ...] = tuple(DEFAULT_TASK_WEIGHTS.items())
    choice_reply: str = "option_text"
    # focus-crop curriculum (focus_crop.py): questions about one object see a window of the image around it,
    # `focus_crop_start` of its sides at step 0, the whole image from `focus_crop_steps` on (0: off)
    focus_crop_start: float = 0.15  # 56 px windows around a driving frame's traffic light at 280x168
    focus_crop_steps: int = 0

    def __post_init__(self) -> None:
        given = dict(self.task_weights)
        unknown = sorted(set(given) - set(TASK_ORDER))
        if unknown:
            raise EdgekitError(
                f"task weights name unknown task(s) {', '.join(unknown)}; tasks are {', '.join(TASK_ORDER)}"
            )
        if not any(w > 0 for _, w in self.task_weights):
            raise EdgekitError("task weights: at least one task needs a positive weight")
        # one order (the tasks'), so a recipe read back from JSON equals the one that wrote it
        object.__setattr__(self, "task_weights", tuple((t, float(given[t])) for t in TASK_ORDER if t in given))
        if self.choice_reply not in CHOICE_REPLIES:
            raise EdgekitError(f"recipe: choice_reply {self.choice_reply!r}: choose one of {', '.join(CHOICE_REPLIES)}")
        if not 0 < self.focus_crop_start <= 1 or self.focus_crop_steps < 0:
            raise EdgekitError(
                f"recipe: focus_crop_start {self.focus_crop_start}, focus_crop_steps {self.focus_crop_steps}: "
                "need 0 < start <= 1 and steps >= 0"
            )
        if self.batch < 1 or self.lr <= 0 or self.warmup < 0:
            raise EdgekitError(
                f"recipe: batch {self.batch}, lr {self.lr}, warmup {self.warmup}: need batch >= 1, lr > 0, warmup >= 0"
            )

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.task_weights)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"task_weights": self.weights}

    @classmethod
    def from_dict(cls, raw: dict) -> "Recipe":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise EdgekitError(f"training recipe has unknown field(s) {', '.join(unknown)}")
        raw = dict(raw)
        if "task_weights" in raw:
            raw["task_weights"] = tuple((str(k), float(v)) for k, v in dict(raw["task_weights"]).items())
        return cls(**raw)


PRESET_RECIPES = {
    "tiny": Recipe("tiny", batch=8, lr=2e-3),
    "small": Recipe("small", batch=8, lr=1e-3, warmup=100),
}


def default_recipe(preset: str, seed: int) -> Recipe:
    if preset not in PRESET_RECIPES:
        raise EdgekitError(f"train-toy --preset {preset}: choose one of {', '.join(PRESET_RECIPES)}")
    return dataclasses.replace(PRESET_RECIPES[preset], seed=seed)


def lr_at(recipe: Recipe, step: int) -> float:
    """Learning rate of optimiser step `step` (0-based): linear warm-up, then lr * sqrt(warmup / step)."""
    if recipe.warmup and step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    return recipe.lr * math.sqrt(max(recipe.warmup, 1) / max(step + 1, 1))
