"""The full-precision reference: transformers' own Qwen2.5-VL, driven exactly as its processor would.

Every exported backend is compared with this. Inputs are built with transformers' image processor
and the checkpoint's chat template, and the model always receives `mm_token_type_ids`: without it
transformers silently falls back to 1-D positions for image tokens (see shared/DESIGN.md), which
would make the oracle wrong, not the backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    import torch


@dataclass
class ModelInputs:
    """One prompt, ready for the model (torch tensors, batch of 1)."""

    input_ids: "torch.Tensor"  # [1, L] int64
    attention_mask: "torch.Tensor"  # [1, L]
    mm_token_type_ids: "torch.Tensor"  # [1, L] 0 text, 1 image
    pixel_values: "torch.Tensor | None" = None  # [patches, C*T*P*P] float32
    image_grid_thw: "torch.Tensor | None" = None  # [images, 3] int64

    def as_kwargs(self, device=None) -> dict:
        """The model's keyword arguments, on `device` (None: where they are)."""
        kw = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
        }
        if self.pixel_values is not None:
            kw.update(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw)
        return kw if device is None else {k: v.to(device) for k, v in kw.items()}


def user_message(question: str, n_images: int, think: bool) -> list[dict]:
    text = question if think or question.rstrip().endswith("/no_think") else f"{question} /no_think"
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


class TorchReference:
    """transformers' Qwen2_5_VLForConditionalGeneration in float32, on the CPU or `device` (results in host memory)."""

    def __init__(self, checkpoint: str | Path, dtype: str = "float32", device: str = "cpu"):
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        from transformers.utils import logging as hf_logging

        from edgekit.devices import resolve_device
        from edgekit.model.checkpoint import open_checkpoint

        self.device = resolve_device(device)
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.checkpoint = open_checkpoint(checkpoint)  # validates before transformers sees it
        path = str(self.checkpoint.path)
        self.torch_dtype = getattr(torch, dtype)
        self.model = (
            Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=self.torch_dtype).eval().to(self.device)
        )
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = AutoImageProcessor.from_pretrained(path)
        ids = self.checkpoint.token_ids
        self.image_token_id = ids.image
        self.merge = self.checkpoint.vision.merge
        eos = self.checkpoint.generation_config.get("eos_token_id", ids.eos)
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    # ---- inputs ----------------------------------------------------------------------------------
    def prompt_text(self, question: str, n_images: int, think: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            user_message(question, n_images, think), tokenize=False, add_generation_prompt=True
        )

    def prepare(
        self, question: str, images: list | None = None, think: bool = False, answer: str | None = None
    ) -> ModelInputs:
        """Tokenise a chat prompt with images; `answer` appends a teacher-forced reply."""
        import torch

        from edgekit.model.processor import check_image_size
        from edgekit.model.prompt import check_text

        images = images or []
        check_text(question, "the prompt")
        for im in images:  # PIL images (.size is (w, h)) or HWC arrays (.shape is (h, w, c))
            check_image_size(*(im.size if hasattr(im, "getbbox") else (im.shape[1], im.shape[0])))
        text = self.prompt_text(question, len(images), think)
        if answer is not None:
            text += answer + "<|im_end|>"
        pixel_values = grid = None
        if images:
            out = self.image_processor(images=images, return_tensors="pt")
            pixel_values, grid = out["pixel_values"].to(self.torch_dtype), out["image_grid_thw"]
            pad = "<|image_pad|>"
            counts = (grid.prod(-1) // (self.merge * self.merge)).tolist()
            pieces = text.split(pad)
            if len(pieces) - 1 != len(counts):
                raise EdgekitError(
                    f"chat template produced {len(pieces) - 1} image placeholders for {len(counts)} images"
                )
            text = pieces[0] + "".join(pad * n + rest for n, rest in zip(counts, pieces[1:]))
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        mm = (ids == self.image_token_id).to(torch.int32)
        return ModelInputs(ids, torch.ones_like(ids), mm, pixel_values, grid)

    # ---- compute ---------------------------------------------------------------------------------
    def logits(self, inputs: ModelInputs):
        """Logits for every position, [L, vocab] float32."""
        import torch

        with torch.no_grad():
            return self.model(**inputs.as_kwargs(self.device)).logits[0].float().cpu()

    def image_embeddings(self, pixel_values, image_grid_thw):
        """The vision tower + merger output fed to the decoder, [tokens, out_hidden]."""
        import torch

        with torch.no_grad():
            out = self.model.model.get_image_features(
                pixel_values=pixel_values.to(self.device, self.torch_dtype),
                image_grid_thw=image_grid_thw.to(self.device),
            )
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        feats = torch.cat(list(feats), dim=0) if isinstance(feats, (list, tuple)) else feats
        return feats.float().cpu()

    def continuation_logits(self, inputs: ModelInputs, continuation: list[int]):
        """Teacher forcing: logits [len(continuation) + 1, vocab] float32 predicting each continuation token, then the
        token after them, given the prompt `inputs` followed by `continuation`."""
        import torch

        extra = torch.tensor([continuation], dtype=inputs.input_ids.dtype)  # [1, A]
        forced = ModelInputs(
            torch.cat([inputs.input_ids, extra], 1),
            torch.cat([inputs.attention_mask, torch.ones_like(extra)], 1),
            torch.cat([inputs.mm_token_type_ids, torch.zeros_like(extra, dtype=inputs.mm_token_type_ids.dtype)], 1),
            inputs.pixel_values,
            inputs.image_grid_thw,
        )
        return self.logits(forced)[inputs.input_ids.shape[1] - 1 :]

    def generate(
        self,
        inputs: ModelInputs,
        max_new_tokens: int = 32,
        on_token: Callable[[int], None] | None = None,
        *,
        stop_at_end: bool = True,
    ) -> list[int]:
        """Greedy decoding; returns the new token ids (without the prompt). stop_at_end=False generates exactly
        max_new_tokens (latency profiling)."""
        import torch
        from transformers.generation.streamers import BaseStreamer

        class _Stream(BaseStreamer):
            def __init__(self):
                self.first = True

            def put(self, value):
                if self.first:  # the first call carries the prompt
                    self.first = False
                    return
                for t in value.reshape(-1).tolist():
                    on_token(int(t))

            def end(self):
                pass

        with torch.no_grad():
            out = self.model.generate(
                **inputs.as_kwargs(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=sorted(self.eos_ids)[0],
                min_new_tokens=0 if stop_at_end else max_new_tokens,
                streamer=_Stream() if on_token else None,
            )
        return out[0, inputs.input_ids.shape[1] :].tolist()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.eos_ids], skip_special_tokens=False)
