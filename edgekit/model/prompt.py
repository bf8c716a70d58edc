"""Prompt text and token ids for Qwen2.5-VL-style checkpoints, without transformers.

1. `build_prompt` renders the checkpoint's own chat template (jinja2, in a sandbox set up the way
   transformers sets it up) with one user turn: image slots and text parts. When thinking is off,
   ` /no_think` is appended to the user's text and `enable_thinking=False` is passed, so templates
   that key on either open the assistant turn with an empty think block.
2. `expand_image_pads` repeats each image's single `<|image_pad|>` to t*h*w/merge^2 copies (one per
   merged vision token), as HF's processor does, before tokenising.
3. `encode_prompt` tokenises with the checkpoint's tokenizer.json (the `tokenizers` library) and
   returns input_ids and mm_token_type_ids (0 text, 1 image, 2 video). The decoder needs the type
   ids to lay out M-RoPE positions (see rope_index.py).
4. `prepare_inputs` does all of it plus image preprocessing and M-RoPE positions in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.model.chat_render import render_chat
from edgekit.model.processor import image_token_counts, preprocess_images
from edgekit.model.prompt_assets import PromptAssets
from edgekit.model.rope_index import mrope_positions, token_types
from edgekit.model.tokenizer_file import load_tokenizer  # noqa: F401 - callers take it from here with the prompt

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
NO_THINK = " /no_think"


@dataclass(frozen=True)
class ImageSlot:
    """Marks where an image goes among the text parts of a user turn."""


IMAGE = ImageSlot()


@dataclass(frozen=True)
class PromptIds:
    input_ids: np.ndarray  # int64 [L]
    mm_token_type_ids: np.ndarray  # int64 [L], 0 text / 1 image / 2 video


# ---- chat template (rendered by edgekit.model.chat_render) ---------------------------------------------------


def user_turn(parts: Sequence[str | ImageSlot], *, think: bool) -> dict:
    """One user message with typed content parts; ` /no_think` goes on the last text part when thinking is off
    (unless that part already ends with it)."""
    content = [{"type": "image"} if isinstance(p, ImageSlot) else {"type": "text", "text": str(p)} for p in parts]
    if not think:
        texts = [i for i, c in enumerate(content) if c["type"] == "text"]
        if texts:
            last = content[texts[-1]]
            if not last["text"].rstrip().endswith(NO_THINK.strip()):  # as the reference's user_message
                last["text"] = last["text"] + NO_THINK
        else:
            content.append({"type": "text", "text": NO_THINK})
    return {"role": "user", "content": content}


def build_prompt_parts(
    chat_template: str,
    parts: Sequence[str | ImageSlot],
    *,
    think: bool,
    system: str | None = None,
    image_token: str = IMAGE_TOKEN,
    **template_vars,
) -> str:
    """Prompt text for text and images in any order (text before, between, after images)."""
    turns = ([("system", [system])] if system is not None else []) + [("user", list(parts))]
    return build_prompt_turns(chat_template, turns, think=think, image_token=image_token, **template_vars)


CHAT_ROLES = ("system", "user", "assistant")


def build_prompt_turns(
    chat_template: str,
    turns: Sequence[tuple[str, Sequence[str | ImageSlot]]],
    *,
    think: bool,
    image_token: str = IMAGE_TOKEN,
    **template_vars,
) -> str:
    """Prompt text for a conversation: (role, parts) turns, images anywhere in user turns; the last turn is the
    user's question (` /no_think` goes on it when thinking is off, as `user_turn` does)."""
    if not turns or turns[-1][0] != "user":
        raise EdgekitError("a conversation must end with a user turn")
    messages = []
    for k, (role, parts) in enumerate(turns):
        if role not in CHAT_ROLES:
            raise EdgekitError(f"message role {role!r}: choose one of {', '.join(CHAT_ROLES)}")
        if role != "user" and any(isinstance(p, ImageSlot) for p in parts):
            raise EdgekitError(f"a {role} message cannot hold an image")
        if role == "user":
            messages.append(
                user_turn(parts, think=think)
                if k == len(turns) - 1
                else {
                    "role": "user",
                    "content": [
                        {"type": "image"} if isinstance(p, ImageSlot) else {"type": "text", "text": str(p)}
                        for p in parts
                    ],
                }
            )
        else:
            messages.append({"role": role, "content": "".join(str(p) for p in parts)})
    text = render_chat(chat_template, messages, add_generation_prompt=True, enable_thinking=think, **template_vars)
    n_images = sum(isinstance(p, ImageSlot) for _, parts in turns for p in parts)
    found = text.count(image_token)
    if found != n_images:
        raise EdgekitError(
            f"chat template wrote {found} '{image_token}' placeholder(s) for {n_images} image(s); the checkpoint's "
            "template must render {'type': 'image'} content parts as <|vision_start|><|image_pad|><|vision_end|>"
        )
    return text


def build_prompt(
    chat_template: str,
    question: str,
    n_images: int,
    *,
    think: bool,
    system: str | None = None,
    image_token: str = IMAGE_TOKEN,
    **template_vars,
) -> str:
    """Prompt text for `n_images` images followed by the question (the order Qwen2.5-VL is trained on)."""
    if n_images < 0:
        raise EdgekitError(f"n_images must be >= 0, got {n_images}")
    return build_prompt_parts(
        chat_template,
        [IMAGE] * n_images + [question],
        think=think,
        system=system,
        image_token=image_token,
        **template_vars,
    )


# ---- placeholders and token ids ------------------------------------------------------------------


def expand_image_pads(prompt: str, grid_thw: np.ndarray, merge_size: int, image_token: str = IMAGE_TOKEN) -> str:
    """Replace the i-th image placeholder with t*h*w/merge^2 copies of itself (grid row i)."""
    counts = image_token_counts(grid_thw, merge_size) if len(np.asarray(grid_thw)) else []
    pieces = prompt.split(image_token)
    if len(pieces) - 1 != len(counts):
        raise EdgekitError(
            f"prompt has {len(pieces) - 1} '{image_token}' placeholder(s) but {len(counts)} image "
            "grid(s) were given; pass one image per placeholder"
        )
    out = [pieces[0]]
    for n, rest in zip(counts, pieces[1:]):
        out.append(image_token * n + rest)
    return "".join(out)


def expand_image_tokens(text_ids: np.ndarray, grid_thw: np.ndarray, merge_size: int, image_token_id: int) -> np.ndarray:
    """Id-level twin of expand_image_pads: int64 [L] with one image id per image -> int64 [L']."""
    ids = np.asarray(text_ids, dtype=np.int64).reshape(-1)
    where = np.flatnonzero(ids == image_token_id)
    counts = image_token_counts(grid_thw, merge_size) if len(np.asarray(grid_thw)) else []
    if len(where) != len(counts):
        raise EdgekitError(
            f"token ids hold {len(where)} image placeholder(s) (id {image_token_id}) but "
            f"{len(counts)} image grid(s) were given; pass one image per placeholder"
        )
    repeats = np.ones(len(ids), dtype=np.int64)
    repeats[where] = counts
    return np.repeat(ids, repeats)


def mm_token_type_ids(input_ids: np.ndarray, image_token_id: int, video_token_id: int | None = None) -> np.ndarray:
    """int64 [L]: 0 text, 1 image, 2 video, as HF's processor returns it."""
    return token_types(input_ids, image_token_id, video_token_id)


def token_id(tokenizer, token: str) -> int:
    tid = tokenizer.token_to_id(token)
    if tid is None:
        raise EdgekitError(
            f"tokenizer.json has no token '{token}'; a Qwen2.5-VL tokenizer defines it as an added token"
        )
    return int(tid)


def encode_prompt(
    tokenizer,
    prompt: str,
    grid_thw: np.ndarray | None,
    *,
    merge_size: int,
    image_token: str = IMAGE_TOKEN,
    video_token: str = VIDEO_TOKEN,
) -> PromptIds:
    """Prompt text with one placeholder per image -> input_ids and mm_token_type_ids.

    `tokenizer` is a tokenizers.Tokenizer (see load_tokenizer). Special tokens are added the way
    the tokenizer's post-processor says (none for Qwen2), like HF's processor call.
    """
    grid = np.zeros((0, 3), np.int64) if grid_thw is None else np.asarray(grid_thw, np.int64).reshape(-1, 3)
    text = expand_image_pads(prompt, grid, merge_size, image_token)
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=True).ids, dtype=np.int64)  # [L]
    video_id = tokenizer.token_to_id(video_token)
    types = mm_token_type_ids(ids, token_id(tokenizer, image_token), video_id)  # [L]
    return PromptIds(input_ids=ids, mm_token_type_ids=types)


# ---- everything a model call needs, in one step --------------------------------------------------


@dataclass(frozen=True)
class ModelInputs:
    input_ids: np.ndarray  # int64 [L]
    mm_token_type_ids: np.ndarray  # int64 [L]
    pixel_values: np.ndarray  # float32 [N, C*T*P*P], N = sum of t*h*w over images
    image_grid_thw: np.ndarray  # int64 [k, 3]
    position_ids: np.ndarray  # int64 [3, L], M-RoPE (t, h, w)
    rope_delta: int  # add to 1-D positions of generated tokens

    def hf_kwargs(self) -> dict[str, np.ndarray]:
        """Batch-of-one arrays under the names transformers' forward takes (wrap with torch.from_numpy)."""
        out = {
            "input_ids": self.input_ids[None],
            "attention_mask": np.ones_like(self.input_ids)[None],
            "mm_token_type_ids": self.mm_token_type_ids[None],
        }
        if len(self.image_grid_thw):
            out.update(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw)
        return out


def check_text(text: str, what: str) -> None:
    """A prompt from the command line may carry bytes that are not UTF-8 (Python keeps them as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise EdgekitError(
            f"{what} is not valid UTF-8 text (bad byte at character {e.start}); pass it as UTF-8"
        ) from None


def prepare_inputs(
    assets: PromptAssets,
    question: str | Sequence[str | ImageSlot],
    images: Sequence = (),
    *,
    think: bool,
    system: str | None = None,
    resize_to: tuple[int, int] | None = None,
) -> ModelInputs:
    """Question + images -> everything the vision tower and decoder need, as HF's processor + get_rope_index.

    `question` is either a string (images go first) or parts with IMAGE slots in the order wanted.
    Images are PIL images, uint8 arrays or file paths (opened with edgekit.data.images.load_image).
    """
    parts = [IMAGE] * len(images) + [question] if isinstance(question, str) else list(question)
    turns = ([("system", [system])] if system is not None else []) + [("user", parts)]
    return prepare_chat(assets, turns, images, think=think, resize_to=resize_to)


def prepare_chat(
    assets: PromptAssets,
    turns: Sequence[tuple[str, Sequence[str | ImageSlot]]],
    images: Sequence = (),
    *,
    think: bool,
    resize_to: tuple[int, int] | None = None,
) -> ModelInputs:
    """A conversation ((role, parts) turns ending with the user's; IMAGE slots in user turns, `images` in the order
    of the slots) -> ModelInputs, as `prepare_inputs` for one question."""
    loaded = [as_image(im) for im in images]
    if loaded:
        pixels, grid = preprocess_images(loaded, assets.image, resize_to=resize_to)
    else:
        pixels, grid = np.zeros((0, assets.image.patch_dim), np.float32), np.zeros((0, 3), np.int64)
    return chat_inputs(assets, turns, grid, think=think, pixel_values=pixels)


def chat_inputs(
    assets: PromptAssets,
    turns: Sequence[tuple[str, Sequence[str | ImageSlot]]],
    grid: np.ndarray,
    *,
    think: bool,
    pixel_values: np.ndarray | None = None,
) -> ModelInputs:
    """`prepare_chat` for images already preprocessed: their grid_thw [k, 3] (and patches, when wanted)."""
    for _, parts in turns:
        for p in parts:
            if isinstance(p, str):
                check_text(p, "the prompt")
    n_slots = sum(isinstance(p, ImageSlot) for _, parts in turns for p in parts)
    if n_slots != len(grid):
        raise EdgekitError(f"the prompt has {n_slots} image slot(s) but {len(grid)} image(s) were given")
    grid = np.asarray(grid, np.int64).reshape(-1, 3)
    prompt = build_prompt_turns(assets.chat_template, turns, think=think)
    ids = encode_prompt(assets.tokenizer, prompt, grid, merge_size=assets.image.merge_size)
    positions, delta = mrope_positions(
        ids.input_ids,
        grid,
        spatial_merge_size=assets.spatial_merge_size,
        image_token_id=assets.image_token_id,
        vision_start_token_id=assets.vision_start_token_id,
    )
    if pixel_values is None:
        pixel_values = np.zeros((0, assets.image.patch_dim), np.float32)
    return ModelInputs(
        input_ids=ids.input_ids,
        mm_token_type_ids=ids.mm_token_type_ids,
        pixel_values=pixel_values,
        image_grid_thw=grid,
        position_ids=positions,
        rope_delta=delta,
    )


def as_image(image):
    """A PIL image or array as given; a path opened with edgekit.data.images.load_image."""
    if isinstance(image, (str, Path)):
        from edgekit.data.images import load_image

        return load_image(image)
    return image
