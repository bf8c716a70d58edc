"""Train a MiMo-Embodied-architecture checkpoint from its random init on generated scenes (`edgekit train-toy`).

The whole model learns (vision tower, merger, decoder) with AdamW on teacher-forced answers, thinking off, in
float32 on the CPU. Example i of the run is a pure function of (seed, i) and the learning rate of step s of (recipe,
s), so the run is deterministic for a seed and step count on a given machine and thread count; the state is saved
atomically every `save_every_s` seconds and a run started again on the same folder resumes from it (after a kill
-9 too) and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.train.checkpoint_out import CHECKPOINT_FILES, write_checkpoint
from edgekit.train.examples import heldout_namespace, train_namespace, training_sample
from edgekit.train.recipe import Recipe, lr_at
from edgekit.train.state import load_state, read_recipe, save_state

WORK_DIR = ".train"  # inside the output: the init and the resumable state
BETAS = (0.9, 0.98)


@dataclass(frozen=True)
class TrainResult:
    out: Path
    steps: int
    seconds: float  # training time over every session of the run
    resumed_at: int  # the step this session started from (0: a new run)
    last_loss: float | None


def _start_or_resume(work: Path, recipe: Recipe) -> tuple[int, float]:
    """(step, seconds) already trained in `work` with this recipe; (0, 0) for a new run (its init written now)."""
    from edgekit.model.fixtures import make_tiny

    state = work / "state.safetensors"
    if state.exists():
        saved, step, seconds = read_recipe(state)
        if saved != recipe:
            diff = sorted(k for k, v in recipe.as_dict().items() if saved.as_dict().get(k) != v)
            raise EdgekitError(
                f"{work.parent} holds a run with another recipe ({', '.join(diff)} differ); "
                "give a new output folder, or the same options to resume it"
            )
        if not (work / "init" / "config.json").exists():
            raise EdgekitError(
                f"{work}: the training state is there but its init checkpoint is not; delete {work} to start over"
            )
        return step, seconds
    if not (work / "init" / "config.json").exists():
        make_tiny(work / "init", recipe.preset, recipe.seed, plant_outliers=False, max_pixels=recipe.max_pixels)
    return 0, 0.0


def train_step(model, optimizer, items: list, pad_id: int, clip: float) -> float:
    """One optimiser step on teacher-forced items [(ModelInputs, n_prompt)]: the batch's answer loss before it."""
    import torch

    from edgekit.train.batch import answer_loss, collate

    loss = answer_loss(model, collate(items, pad_id))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def curriculum_sample(recipe: Recipe, processor, step: int, index: int, weights: dict[str, float]):
    """Training example `index` (at optimiser step `step`) as the recipe's focus-crop curriculum shows it."""
    import random

    from edgekit.train.examples import SceneSample
    from edgekit.train.focus_crop import crop_fraction, focus_crop

    example = training_sample(recipe.seed, index, weights)
    fraction = crop_fraction(recipe.focus_crop_start, recipe.focus_crop_steps, step)
    if example.focus is None or fraction >= 1.0:
        return example
    rng = random.Random(f"edgekit-focus-crop/{recipe.seed}/{index}")
    image = focus_crop(example.image, processor, example.focus, fraction, rng)
    return SceneSample(example.sample, image, None)


def train_toy(
    out: str | Path,
    recipe: Recipe,
    *,
    steps: int | None = None,
    minutes: float | None = None,
    threads: int | None = None,
    save_every_s: float = 60.0,
    on_step: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train until `steps` optimiser steps, or `minutes` of training in all, whichever comes first (one is needed).
    on_step(step, loss, seconds) after every step."""
    import torch

    from edgekit.cores import available_cores
    from edgekit.model.processor import load_processor_config
    from edgekit.outputs import claim_dir
    from edgekit.runtime.torch_ref import TorchReference
    from edgekit.train.batch import teacher_forced

    if steps is None and minutes is None:
        raise EdgekitError("train-toy needs --steps or --minutes (or both)")
    out = Path(out)
    claim_dir(out, [], ours=lambda name: name in CHECKPOINT_FILES or name == WORK_DIR, what="trained checkpoint")
    work = out / WORK_DIR
    step, seconds = _start_or_resume(work, recipe)
    resumed_at = step
    n_threads = threads or available_cores()
    torch.set_num_threads(n_threads)
    torch.manual_seed(recipe.seed)
    ref = TorchReference(work / "init")
    model = ref.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=BETAS, weight_decay=recipe.weight_decay)
    state = work / "state.safetensors"
    if step:
        load_state(state, model, optimizer)
    pad = ref.checkpoint.token_ids.eos
    processor = load_processor_config(work / "init")
    weights = recipe.weights

    def done() -> bool:
        return (steps is not None and step >= steps) or (minutes is not None and seconds >= minutes * 60)

    last_loss, last_save = None, time.monotonic()
    while not done():
        t0 = time.monotonic()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(recipe, step)
        first = step * recipe.batch
        items = [
            teacher_forced(
                ref, processor, curriculum_sample(recipe, processor, step, first + k, weights), recipe.choice_reply
            )
            for k in range(recipe.batch)
        ]
        step, last_loss = step + 1, train_step(model, optimizer, items, pad, recipe.clip)
        seconds += time.monotonic() - t0
        if on_step:
            on_step(step, last_loss, seconds)
        if time.monotonic() - last_save >= save_every_s and not done():
            save_state(state, model, optimizer, step, recipe, seconds)
            last_save = time.monotonic()
    if step > resumed_at:
        save_state(state, model, optimizer, step, recipe, seconds)
    model.eval()
    training = {
        "recipe": recipe.as_dict(),
        "steps": step,
        "examples": step * recipe.batch,
        "training_seconds": round(seconds, 1),
        "threads": n_threads,
        "torch": torch.__version__,
        "train_scenes": train_namespace(recipe.seed),
        "heldout_scenes": heldout_namespace(recipe.seed),
        "last_loss": last_loss,
        "note": "trained by edgekit train-toy on generated scenes from a random init",
    }
    write_checkpoint(out, work / "init", model, training)
    return TrainResult(out, step, seconds, resumed_at, last_loss)
