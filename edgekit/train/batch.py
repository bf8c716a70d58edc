"""Teacher-forced batches: the prompt as the reference builds it, the answer after it, loss on the answer only."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.bench.scoring import ImageFrame
from edgekit.errors import EdgekitError
from edgekit.model.processor import ImageProcessorConfig, target_size
from edgekit.train.examples import SceneSample, seen_answer

IGNORE = -100  # torch's cross_entropy ignore_index
END_OF_TURN = "<|im_end|>"  # what TorchReference.prepare appends after a teacher-forced answer


@dataclass
class Batch:
    """Right-padded model inputs and labels (IGNORE outside the answers), torch tensors."""

    kwargs: dict  # input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw
    labels: object  # [B, L] int64: labels[b, t] is the token at t+1 when it is an answer token


def seen_frame(processor: ImageProcessorConfig, image) -> ImageFrame:
    """(width, height) of the image the model sees after the processor's resize, and of the original."""
    h, w = target_size(image.size[1], image.size[0], processor)
    return ImageFrame(seen=(w, h), original=tuple(image.size))


def teacher_forced(reference, processor: ImageProcessorConfig, example: SceneSample, choice_reply: str):
    """(ModelInputs of prompt + answer + <|im_end|>, number of prompt tokens); choice_reply: recipe.CHOICE_REPLIES."""
    answer = seen_answer(example.sample, seen_frame(processor, example.image), choice_reply)
    full = reference.prepare(example.sample.question, [example.image], answer=answer)
    tail = reference.tokenizer(answer + END_OF_TURN, add_special_tokens=False).input_ids
    n = full.input_ids.shape[1] - len(tail)
    if full.input_ids[0, n:].tolist() != tail:
        raise EdgekitError(
            f"{example.sample.id}: the tokenizer merged the answer into the prompt's last token; "
            "the chat template must end the assistant header with a newline"
        )
    return full, n


def collate(items: list, pad_id: int) -> Batch:
    """[(ModelInputs, n_prompt)] -> one right-padded batch; labels shifted so labels[:, t] is predicted at t."""
    import torch

    length = max(inp.input_ids.shape[1] for inp, _ in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), length), dtype=torch.long)
    types = torch.zeros((len(items), length), dtype=items[0][0].mm_token_type_ids.dtype)
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    for b, (inp, n_prompt) in enumerate(items):
        n = inp.input_ids.shape[1]
        ids[b, :n], mask[b, :n], types[b, :n] = inp.input_ids[0], 1, inp.mm_token_type_ids[0]
        labels[b, n_prompt - 1 : n - 1] = inp.input_ids[0, n_prompt:n]  # position t predicts token t+1
    kwargs = {
        "input_ids": ids,
        "attention_mask": mask,
        "mm_token_type_ids": types,
        "pixel_values": torch.cat([inp.pixel_values for inp, _ in items]),
        "image_grid_thw": torch.cat([inp.image_grid_thw for inp, _ in items]),
    }
    return Batch(kwargs, labels)


def answer_loss(model, batch: Batch):
    """Mean cross-entropy over the answer tokens; the LM head runs on those positions only."""
    import torch

    hidden = model.model(**batch.kwargs).last_hidden_state  # [B, L, H]
    where = batch.labels != IGNORE
    logits = model.lm_head(hidden[where])  # [N, vocab]
    return torch.nn.functional.cross_entropy(logits.float(), batch.labels[where])
