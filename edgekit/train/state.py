"""A training run's resumable state in one safetensors file: float32 weights, AdamW's moments, the step and the recipe.

One file, replaced atomically, so a kill at any moment leaves either the previous save or the new one; resuming
from it reproduces the uninterrupted run bit for bit (the data and the learning rate are functions of the step).
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.atomic import atomic_path, plain_mode
from edgekit.errors import EdgekitError
from edgekit.train.recipe import Recipe

STATE_FORMAT = "edgekit-train-state/1"
_MOMENTS = ("exp_avg", "exp_avg_sq")


def save_state(path: Path, model, optimizer, step: int, recipe: Recipe, seconds: float) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {f"model/{name}": p.detach().contiguous() for name, p in model.named_parameters()}
    names = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            for key in _MOMENTS:
                tensors[f"adam/{names[id(p)]}/{key}"] = st[key].contiguous()
            tensors[f"adam/{names[id(p)]}/step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    meta = {
        "format": STATE_FORMAT,
        "step": str(step),
        "seconds": repr(seconds),
        "recipe": json.dumps(recipe.as_dict(), sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        plain_mode(tmp)  # safetensors writes the file anew, 0600


def read_recipe(path: Path) -> tuple[Recipe, int, float]:
    """(recipe, step, seconds trained) from a state file's header, or one line saying what is wrong with it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a truncated or foreign file
        raise EdgekitError(f"{path}: not a readable training state ({e}); delete it to start over") from None
    if meta.get("format") != STATE_FORMAT:
        raise EdgekitError(
            f"{path}: not an edgekit training state (format {meta.get('format')!r}); delete it to start over"
        )
    try:
        return Recipe.from_dict(json.loads(meta["recipe"])), int(meta["step"]), float(meta["seconds"])
    except (KeyError, ValueError, TypeError) as e:
        raise EdgekitError(f"{path}: training state header is damaged ({e}); delete it to start over") from None


def load_state(path: Path, model, optimizer) -> None:
    """Weights and AdamW moments back into `model` and `optimizer` (built with the same parameters)."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    params = dict(model.named_parameters())
    expected = {f"model/{n}" for n in params}
    found = {k for k in tensors if k.startswith("model/")}
    if found != expected:
        missing = sorted(expected - found)[:3]
        raise EdgekitError(
            f"{path}: training state does not match the model (missing {missing}); delete it to start over"
        )
    with torch.no_grad():
        for name, p in params.items():
            src = tensors[f"model/{name}"]
            if src.shape != p.shape or src.dtype != p.dtype:
                raise EdgekitError(
                    f"{path}: {name} is {tuple(src.shape)} {src.dtype} in the state, "
                    f"{tuple(p.shape)} {p.dtype} in the model; delete it to start over"
                )
            p.copy_(src)
    for name, p in params.items():
        if f"adam/{name}/step" not in tensors:
            continue
        moments = {k: tensors.get(f"adam/{name}/{k}") for k in _MOMENTS}
        if any(m is None or m.shape != p.shape for m in moments.values()):
            raise EdgekitError(f"{path}: AdamW's moments of {name} are missing or misshapen; delete it to start over")
        optimizer.state[p] = {
            "step": tensors[f"adam/{name}/step"][0].clone(),
            **{k: m.clone() for k, m in moments.items()},
        }
