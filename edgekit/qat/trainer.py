"""The optimisation loop both QAT phases share: deterministic batches, Adam, checkpoints every K steps, resume.

A step's batch depends only on (seed, phase tag, step), never on what ran before, so a run resumed from its last
checkpoint (trainables + Adam moments) takes the same steps as one that was never killed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from edgekit.qat.parallel import Group
from edgekit.qat.state import load_progress, save_progress


def batch_indices(n: int, batch: int, step: int, seed: int, tag: str) -> list[int]:
    """The sequences of one step: epochs of a seeded permutation, `batch` indices wrapping around the end."""
    per_epoch = -(-n // batch)
    epoch, j = divmod(step, per_epoch)
    key = int.from_bytes(hashlib.sha256(f"{seed}:{tag}:{epoch}".encode()).digest()[:8], "little") >> 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(key)).tolist()
    return [perm[(j * batch + r) % n] for r in range(batch)]


@dataclass
class Loop:
    steps: int
    checkpoint_every: int
    progress_file: Path
    tag: dict  # identifies the phase (and layer) a saved checkpoint belongs to
    group: Group
    on_step: Callable[[int, int, float], None] | None = None  # (done, total, loss)


def train(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, loop: Loop, batch_for: Callable[[int], tuple]
) -> list[float]:
    """Run steps [resume point, loop.steps); returns the losses of every step, those before a resume included (they
    travel in the checkpoint)."""
    start, losses = load_progress(loop.progress_file, loop.tag, module, optimizer)
    wrapped = loop.group.wrap(module)
    for step in range(start, loop.steps):
        loss = wrapped(*batch_for(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loop.group.total(float(loss.detach())) / loop.group.world
        losses.append(value)
        done = step + 1
        if done % loop.checkpoint_every == 0 and done < loop.steps:
            if loop.group.is_writer:
                save_progress(loop.progress_file, {**loop.tag, "step": done, "losses": losses}, module, optimizer)
            loop.group.barrier()
        if loop.on_step:
            loop.on_step(done, loop.steps, value)
    return losses
