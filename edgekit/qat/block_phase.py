"""Phase 1: block-wise reconstruction, one decoder layer at a time (streamed like calibration).

For layer i: the full-precision layer maps the full-precision stream to the target; the layer with fake-quantized
linears (latent weights and float scales trainable, starting from the PTQ init) learns to map the QUANTIZED stream
(what earlier trained layers produce) to that target, so it also corrects the error arriving from below. Peak memory
is one layer, its trainables and Adam moments, plus both streams' hidden states: flat in depth.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekit.qat.student import LINEARS, BlockStudent, QuantizedLayer
from edgekit.qat.trainer import Loop, batch_indices, train


def quantized_layer(
    ck, hf_cfg, i: int, quantized, folded: dict, latent: str, input_scales: dict | None = None
) -> QuantizedLayer:
    """Layer i with FakeQuantLinears from (codes, params) `quantized`, norms with any folded scales.
    latent: "original" (W0 = the checkpoint's weight; RTN init), "dequantized" (W0 = the init's grid values;
    GPTQ/AWQ codes are not the rounding of W), "none" (codes fixed: phase 2).
    input_scales (linear name -> scale): the linears whose activations the runtime quantizes (FP8, NVFP4, W8A8) see
    them quantized as it does, with a straight-through gradient; None: float activations."""
    from edgekit.qat.fake_quant import FakeQuantLinear
    from edgekit.quant.evaluate import quantize_inputs
    from edgekit.quant.formats import parse as parse_format
    from edgekit.quant.grids import dequantize_weight
    from edgekit.quant.layers import decoder_layer

    prefix = f"model.layers.{i}."
    layer = decoder_layer(ck, hf_cfg, i, {k[len(prefix) :]: v for k, v in folded.items() if k.startswith(prefix)})
    linears = {}
    for n in LINEARS:
        qw = quantized[prefix + n + ".weight"]
        w0 = {
            "original": lambda: layer.get_submodule(n).weight.detach(),
            "dequantized": lambda: dequantize_weight(qw),
            "none": lambda: None,
        }[latent]()
        linears[n] = FakeQuantLinear(qw.grid, qw, w0)
        scale = (input_scales or {}).get(prefix + n)
        if scale is not None:
            quantize_inputs(layer.get_submodule(n), parse_format(qw.grid), scale, straight_through=True)
    return QuantizedLayer(layer, linears)


def layer_optimizer(student: torch.nn.Module, weight_lr: float, scale_lr: float) -> torch.optim.Optimizer:
    weights = [p for n, p in student.named_parameters() if p.requires_grad and n.endswith(".u")]
    scales = [p for n, p in student.named_parameters() if p.requires_grad and not n.endswith(".u")]
    return torch.optim.Adam([{"params": weights, "lr": weight_lr}, {"params": scales, "lr": scale_lr}])


def output_head(ck, hf_cfg) -> tuple[torch.nn.Module, torch.Tensor]:
    """The final RMSNorm and lm_head (the embeddings where tied), float32."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    text = hf_cfg.text_config
    norm = Qwen2RMSNorm(text.hidden_size, eps=text.rms_norm_eps)
    norm.weight.data = ck.get("model.norm.weight").float()
    head = "lm_head.weight" if "lm_head.weight" in ck.tensor_names() else "model.embed_tokens.weight"
    return norm.eval(), ck.get(head).float()


def run_block_phase(ck, hf_cfg, seqs, init, settings, work: Path, group, on_step=None) -> list[float | None]:
    """Train every layer in turn (resuming after the last finished one); returns the final loss of each layer run."""
    from edgekit.metrics import relative_error
    from edgekit.qat.state import PROGRESS, load_tensors, save_tensors
    from edgekit.atomic import write_json
    from edgekit.quant.calib_cache import resume_point, save_hidden, save_layer
    from edgekit.quant.layers import decoder_layer, layer0_inputs, rotary, run_layer

    n_layers, n = ck.text.num_layers, len(seqs)
    device = group.device
    rope = rotary(hf_cfg).to(device)
    positions = [torch.from_numpy(s.positions) for s in seqs]
    first, hidden = resume_point(work, n_layers)
    recorded = _read_losses(work)  # final losses of layers finished before a resume
    if first == n_layers:
        return [recorded.get(str(i)) for i in range(n_layers)]
    if hidden is None:
        if (work / "inputs.safetensors").is_file():
            saved = load_tensors(work / "inputs.safetensors")
            fp = [saved[f"x::{j:06d}"] for j in range(n)]
        else:
            fp = layer0_inputs(ck, seqs, hf_cfg, device)
            if group.is_writer:
                save_tensors(work / "inputs.safetensors", {f"x::{j:06d}": x for j, x in enumerate(fp)})
        q = list(fp)
    else:
        fp, q = hidden[:n], hidden[n:]
    latent = "original" if settings.init == "rtn" else "dequantized"
    for i in range(first, n_layers):
        target = run_layer(decoder_layer(ck, hf_cfg, i).to(device), rope, fp, seqs)  # host memory
        prefix = f"model.layers.{i}."
        folded = {k: v for k, v in init.folded.items() if k.startswith(prefix)}
        # activation scales (FP8, NVFP4) stay the init's: measured on full-precision activations, as PTQ's are
        input_scales = {k: v for k, v in init.input_scales.items() if k.startswith(prefix)}
        qlayer = quantized_layer(
            ck, hf_cfg, i, init.quantized, folded, latent, None if settings.float_activations else input_scales
        )
        student = BlockStudent(qlayer, rope, group.world).to(device)
        optimizer = layer_optimizer(student, settings.block_lr, settings.scale_lr)
        steps = settings.block_epochs * -(-n // settings.batch)

        squares = [t.square().sum() for t in target]  # each sequence's share of a batch's normaliser, once

        def batch_for(step: int, i=i, target=target, q=q, squares=squares):
            idx = batch_indices(n, settings.batch, step, settings.seed, f"block{i}")
            norm = float(sum(squares[k] for k in idx))
            mine = group.shard(idx)
            return [q[k] for k in mine], [target[k] for k in mine], [positions[k] for k in mine], norm

        loop = Loop(
            steps,
            settings.checkpoint_every,
            work / PROGRESS,
            {"phase": "block", "layer": i},
            group,
            (lambda d, t, v, i=i: on_step(f"layer {i}", d, t, v)) if on_step else None,
        )
        losses = train(student, optimizer, loop, batch_for)
        recorded[str(i)] = losses[-1] if losses else None
        q_next = student.outputs(q, positions)
        linears = student.qlayer.linears()
        quantized = {prefix + name + ".weight": fq.export() for name, fq in linears.items()}
        # the layer's output against the full-precision layer's (recorded for each of its linears)
        err = relative_error(torch.cat([y[0] for y in q_next]), torch.cat([t[0] for t in target]))
        errors = {name: err for name in quantized}
        if group.is_writer:
            if i == n_layers - 1:
                save_tensors(work / "teacher.safetensors", {f"h::{j:06d}": h for j, h in enumerate(target)})
            write_json(work / LOSSES_FILE, recorded)  # before the layer file: a finished layer always has its loss
            save_layer(work / f"layer_{i:04d}.safetensors", quantized, folded, input_scales, errors)
            save_hidden(work, i, target + q_next)
        group.barrier()
        fp, q = target, q_next
        del student, optimizer
        ck.close()
    return [recorded.get(str(i)) for i in range(n_layers)]


LOSSES_FILE = "block_losses.json"


def _read_losses(work: Path) -> dict:
    from edgekit.json_files import read_json_object

    return read_json_object(work / LOSSES_FILE, optional=True)
