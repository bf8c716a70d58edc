"""Phase 2: end-to-end distillation with only the quantization scales trainable.

The codes phase 1 chose stay fixed; the float-stored params of every linear (Q4_K's fp16 d/dmin, W4A16's group
scales, ...; FP4 in GGUF has none, so its phase 2 is skipped) train on KL(teacher‖student) over the logits of the
calibration sequences. The layer-0 inputs (vision
embeddings included, the vision tower frozen) and the teacher's top-k distributions were computed once in phase 1,
so the teacher never runs here. Memory: the codes (int8), the float scales and the output head, plus one layer's
activations at a time in the backward pass (each layer is recomputed there).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekit.qat.block_phase import output_head, quantized_layer
from edgekit.qat.student import DistillStudent
from edgekit.qat.trainer import Loop, batch_indices, train

FINAL = "distilled"


def layer_files(work: Path, n_layers: int, distilled: bool) -> list[Path]:
    where = work / FINAL if distilled else work
    return [where / f"layer_{i:04d}.safetensors" for i in range(n_layers)]


def run_distill_phase(ck, hf_cfg, seqs, settings, work: Path, group, on_step=None) -> list[float]:
    """Train the scales for settings.steps steps (resuming); writes work/distilled/layer_*.safetensors."""
    from edgekit.qat.state import PROGRESS, load_tensors
    from edgekit.quant.calib_cache import load_layer, save_layer
    from edgekit.quant.layers import rotary

    n_layers, n = ck.text.num_layers, len(seqs)
    finals = layer_files(work, n_layers, True)
    if all(f.is_file() for f in finals):
        return []
    layers, folded_all, scales_all, errors_all = [], {}, {}, {}
    for i, f in enumerate(layer_files(work, n_layers, False)):
        quantized, folded, input_scales, errors = load_layer(f)
        layers.append(
            quantized_layer(
                ck, hf_cfg, i, quantized, folded, "none", None if settings.float_activations else input_scales
            )
        )
        folded_all[i], scales_all[i], errors_all[i] = folded, input_scales, errors
        ck.close()
    norm, lm_head = output_head(ck, hf_cfg)
    student = DistillStudent(layers, norm, lm_head, rotary(hf_cfg), group.world).to(group.device)
    inputs, teacher = load_tensors(work / "inputs.safetensors"), load_tensors(work / "teacher.safetensors")
    xs = [inputs[f"x::{j:06d}"] for j in range(n)]
    targets = [teacher[f"h::{j:06d}"] for j in range(n)]
    positions = [torch.from_numpy(s.positions) for s in seqs]
    trainables = [p for p in student.parameters() if p.requires_grad]
    # FP4 formats store their scales as bytes (E8M0, UE4M3), not floats: nothing trains here, the codes phase 1
    # chose are exported as they are
    optimizer = torch.optim.Adam(trainables, lr=settings.lr) if trainables else None

    def batch_for(step: int):
        idx = batch_indices(n, settings.batch, step, settings.seed, "distill")
        tokens = float(sum(xs[k].shape[1] for k in idx))
        mine = group.shard(idx)
        return [xs[k] for k in mine], [targets[k] for k in mine], [positions[k] for k in mine], tokens

    loop = Loop(
        settings.steps,
        settings.checkpoint_every,
        work / PROGRESS,
        {"phase": "distill"},
        group,
        (lambda d, t, v: on_step("distill", d, t, v)) if on_step else None,
    )
    losses = train(student, optimizer, loop, batch_for) if optimizer is not None else []
    if group.is_writer:
        for i, layer in enumerate(student.layers):
            quantized = {f"model.layers.{i}.{name}.weight": fq.export() for name, fq in layer.linears().items()}
            save_layer(finals[i], quantized, folded_all[i], scales_all[i], errors_all[i])
    group.barrier()
    return losses
