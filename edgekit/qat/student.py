"""QAT students as torch modules whose forward returns the (rank-local share of the) loss, so torch's DDP can wrap
them as they are (`edgekit.qat.parallel`).

  BlockStudent    phase 1: one decoder layer with fake-quantized linears, loss = relative squared error against the
                  full-precision layer's outputs on a batch of sequences
  DistillStudent  phase 2: the whole decoder (codes fixed, float scales trainable) from the layer-0 inputs to the
                  logits, loss = KL(teacher‖student) over the vocabulary, the teacher's logits computed from its
                  stored last hidden states by the same (frozen) norm and lm_head

A loss is Σ over this rank's sequences / a normaliser over the GLOBAL batch, times the world size: DDP averages
gradients over ranks, so N processes compute exactly the one-process gradient (up to summation order).
"""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from edgekit.qat.fake_quant import FakeQuantLinear

LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _key(linear: str) -> str:
    return linear.replace(".", "__")  # ModuleDict keys cannot hold dots


class QuantizedLayer(torch.nn.Module):
    """A transformers decoder layer (frozen) whose linears take their weights from FakeQuantLinears."""

    def __init__(self, layer: torch.nn.Module, linears: dict[str, FakeQuantLinear]):
        super().__init__()
        self.layer = layer.requires_grad_(False)
        self.fq = torch.nn.ModuleDict({_key(n): linears[n] for n in LINEARS})
        for n in LINEARS:  # the float weights are replaced in every forward: do not hold them
            layer.get_submodule(n).weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)

    def weights(self) -> dict[str, torch.Tensor]:
        return {f"{n}.weight": self.fq[_key(n)].weight() for n in LINEARS}

    def run(self, weights: dict[str, torch.Tensor], x: torch.Tensor, position_embeddings) -> torch.Tensor:
        return functional_call(
            self.layer, weights, (x,), {"attention_mask": None, "position_embeddings": position_embeddings}
        )

    def linears(self) -> dict[str, FakeQuantLinear]:
        return {n: self.fq[_key(n)] for n in LINEARS}


def position_embeddings(rope, x: torch.Tensor, positions) -> tuple:
    pos = torch.as_tensor(positions).unsqueeze(1).to(x.device)  # [3, 1, L]
    return rope(x, pos)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a student runs (its inputs and targets live in host memory and come over a sequence at a time)."""
    return next(module.parameters()).device


class BlockStudent(torch.nn.Module):
    def __init__(self, qlayer: QuantizedLayer, rope, world: int = 1):
        super().__init__()
        self.qlayer, self.rope, self.world = qlayer, rope, world

    def forward(self, inputs: list[torch.Tensor], targets: list[torch.Tensor], positions: list, norm: float):
        weights = self.qlayer.weights()  # once per step, shared by the batch's sequences
        device = module_device(self)
        total = torch.zeros((), device=device)
        for x, t, pos in zip(inputs, targets, positions):
            x = x.to(device)
            y = self.qlayer.run(weights, x, position_embeddings(self.rope, x, pos))
            total = total + (y - t.to(device)).square().sum()
        return total / norm * self.world

    @torch.no_grad()
    def outputs(self, inputs: list[torch.Tensor], positions: list) -> list[torch.Tensor]:
        weights = self.qlayer.weights()
        device = module_device(self)
        return [
            self.qlayer.run(weights, x.to(device), position_embeddings(self.rope, x.to(device), p)).cpu()
            for x, p in zip(inputs, positions)
        ]


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Σ over tokens of KL(teacher‖student) over the whole vocabulary (pure numerics; [L, V] each)."""
    lp = torch.log_softmax(teacher_logits.float(), -1)
    lq = torch.log_softmax(student_logits.float(), -1)
    return (lp.exp() * (lp - lq)).sum()


HEAD_CHUNK = 128  # tokens whose vocabulary-sized logits exist at once (151,680 columns: 78 MB per tensor)


class DistillStudent(torch.nn.Module):
    def __init__(
        self, layers: list[QuantizedLayer], norm: torch.nn.Module, lm_head: torch.Tensor, rope, world: int = 1
    ):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.norm = norm.requires_grad_(False)
        self.register_buffer("lm_head", lm_head)
        self.rope, self.world = rope, world

    def hidden(self, x: torch.Tensor, pos) -> torch.Tensor:
        """The last decoder layer's output; each layer is recomputed in the backward pass, so memory holds one
        layer's activations, not the depth's."""
        pe = position_embeddings(self.rope, x, pos)
        for layer in self.layers:

            def block(h, layer=layer):
                return layer.run(layer.weights(), h, pe)

            x = checkpoint(block, x, use_reentrant=False)
        return x

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h)[0] @ self.lm_head.T

    def _chunk_kl(self, student_h: torch.Tensor, teacher_h: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.head(teacher_h)  # from the teacher's stored last hidden states: no vocab-sized file
        return token_kl(self.head(student_h), teacher)

    def forward(self, inputs: list[torch.Tensor], teacher_hidden: list[torch.Tensor], positions: list, norm: float):
        device = self.lm_head.device
        total = torch.zeros((), device=device)
        for x, h, pos in zip(inputs, teacher_hidden, positions):
            h = h.to(device)
            y = self.hidden(x.to(device), pos)
            for a in range(0, y.shape[1], HEAD_CHUNK):  # logits a chunk at a time, recomputed in the backward pass
                total = total + checkpoint(
                    self._chunk_kl, y[:, a : a + HEAD_CHUNK], h[:, a : a + HEAD_CHUNK], use_reentrant=False
                )
        return total / norm * self.world
