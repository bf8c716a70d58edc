"""Write trained weights as a normal checkpoint: the init's config, tokenizer, chat template and processor files, and
the weights in bf16 under the Hub's tensor names (what the real MiMo-Embodied ships), one safetensors file."""

from __future__ import annotations

import shutil
from pathlib import Path

from edgekit.atomic import atomic_path, plain_mode, write_json
from edgekit.errors import EdgekitError

ASSET_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "preprocessor_config.json",
)
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "edgekit_training.json"
CHECKPOINT_FILES = (*ASSET_FILES, WEIGHTS_FILE, TRAINING_FILE)
# transformers' module paths -> the names in Qwen2.5-VL checkpoints on the Hub (the reverse of its loading map)
_HUB_PREFIXES = (("model.visual.", "visual."), ("model.language_model.", "model."))


def hub_name(name: str) -> str:
    for module, hub in _HUB_PREFIXES:
        if name.startswith(module):
            return hub + name[len(module) :]
    return name


def write_checkpoint(out: Path, init: Path, model, training: dict) -> None:
    """Every file of the trained checkpoint in `out`, each written atomically; weights last but one, the training
    record last (its presence says the checkpoint is complete)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(init / WEIGHTS_FILE), "pt") as f:
        init_names = set(f.keys())
    tensors = {hub_name(n): t.detach().to(torch.bfloat16).contiguous() for n, t in model.state_dict().items()}
    if set(tensors) != init_names:
        odd = sorted(set(tensors) ^ init_names)[:3]
        raise EdgekitError(
            f"trained tensor names differ from the checkpoint's ({odd}); this transformers version lays "
            "Qwen2.5-VL out differently"
        )
    for name in ASSET_FILES:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(init / name, tmp)
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        plain_mode(tmp)  # safetensors writes the file anew, 0600
    write_json(out / TRAINING_FILE, training)
