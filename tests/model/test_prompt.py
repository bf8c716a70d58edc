"""edgekit.model.prompt against transformers' tokenizer chat template and Qwen2.5-VL processor.

The processor oracle is `Qwen2_5_VLProcessor` with the image processor and tokenizer only:
AutoProcessor also builds the video processor, which needs torchvision (absent here), so a
subclass drops that one argument; text expansion, tokenising and mm_token_type_ids are HF's own.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from edgekit.errors import EdgekitError
from edgekit.model.processor import load_processor_config, preprocess_images
from edgekit.model.prompt import (
    IMAGE,
    NO_THINK,
    build_prompt,
    build_prompt_parts,
    encode_prompt,
    expand_image_tokens,
    load_tokenizer,
    render_chat,
)
from edgekit.model.rope_index import mrope_positions

WORDS = [
    "the",
    "robot",
    "gripper",
    "ahead",
    "lane",
    "car",
    "red",
    "cup",
    "left",
    "is",
    "what",
    "Ünïcødé",
    "停车",
    "  ",
    "\n",
    "42",
    "?",
    "<b>",
    "&",
]


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt


@pytest.fixture(scope="module")
def template(ckpt):
    return (ckpt / "chat_template.jinja").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hf(ckpt):
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template)

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    return ImageOnlyProcessor(
        image_processor=AutoImageProcessor.from_pretrained(str(ckpt)), tokenizer=tok, chat_template=tok.chat_template
    )


def random_text(rng, n_words):
    return " ".join(rng.choice(WORDS, n_words)).strip() or "why"


def random_parts(rng, n_images):
    """Text before / between / after images, with some of those slots empty."""
    parts = []
    for i in range(n_images + 1):
        if i == n_images or rng.random() < 0.6:
            parts.append(random_text(rng, int(rng.integers(1, 8))))
        if i < n_images:
            parts.append(IMAGE)
    return parts


def hf_messages(parts, think, system=None):
    content = [{"type": "image"} if p is IMAGE else {"type": "text", "text": p} for p in parts]
    if not think:
        last = max(i for i, c in enumerate(content) if c["type"] == "text")
        content[last] = {"type": "text", "text": content[last]["text"] + NO_THINK}
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]


def random_images(rng, n):
    sizes = [(1024, 484), (56, 56), (333, 517), (517, 333), (97, 29)]
    out = []
    for _ in range(n):
        w, h = sizes[int(rng.integers(0, len(sizes)))]
        out.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return out


@pytest.mark.parametrize("think", [True, False])
@pytest.mark.parametrize("n_images", [0, 1, 2, 4])
def test_prompt_text_equals_hf_template(hf, template, think, n_images):
    rng = np.random.default_rng(10 * n_images + think)
    for system in (None, "You drive carefully."):
        parts = random_parts(rng, n_images)
        mine = build_prompt_parts(template, parts, think=think, system=system)
        ref = hf.tokenizer.apply_chat_template(
            hf_messages(parts, think, system), add_generation_prompt=True, tokenize=False, enable_thinking=think
        )
        assert mine == ref
        assert mine.count("<|vision_start|><|image_pad|><|vision_end|>") == n_images
        assert mine.endswith("<think>\n\n</think>\n\n") == (not think)


def test_build_prompt_puts_images_first(template):
    text = build_prompt(template, "Where is the cup?", 2, think=False)
    user = text.split("<|im_start|>user\n")[1]
    assert user.startswith("<|vision_start|><|image_pad|><|vision_end|>" * 2 + "Where is the cup?" + NO_THINK)


@pytest.mark.parametrize("n_images", [1, 2, 3])
def test_encoded_inputs_equal_hf_processor(hf, ckpt, template, n_images):
    """input_ids, mm_token_type_ids, pixel_values, grid_thw and M-RoPE positions all match HF."""
    rng = np.random.default_rng(500 + n_images)
    cfg = load_processor_config(ckpt)
    tok = load_tokenizer(ckpt / "tokenizer.json")
    for think in (True, False):
        parts = random_parts(rng, n_images)
        images = random_images(rng, n_images)
        prompt = build_prompt_parts(template, parts, think=think)
        pixels, grid = preprocess_images(images, cfg)
        ids = encode_prompt(tok, prompt, grid, merge_size=cfg.merge_size)

        ref = hf(text=[prompt], images=images, return_tensors="np")
        assert np.array_equal(ids.input_ids, ref["input_ids"][0])
        assert np.array_equal(ids.mm_token_type_ids, ref["mm_token_type_ids"][0])
        assert np.array_equal(pixels, ref["pixel_values"]) and np.array_equal(grid, ref["image_grid_thw"])

        pos, delta = mrope_positions(
            ids.input_ids,
            grid,
            spatial_merge_size=cfg.merge_size,
            image_token_id=tok.token_to_id("<|image_pad|>"),
            vision_start_token_id=tok.token_to_id("<|vision_start|>"),
        )
        ref_pos, ref_delta = hf_rope(ckpt, ref)
        assert np.array_equal(pos, ref_pos) and delta == ref_delta


def hf_rope(ckpt, ref):
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    with torch.device("meta"):  # get_rope_index reads only the config
        model = Qwen2_5_VLModel(Qwen2_5_VLConfig.from_pretrained(str(ckpt)))
    pos, delta = model.get_rope_index(
        torch.from_numpy(ref["input_ids"]),
        mm_token_type_ids=torch.from_numpy(ref["mm_token_type_ids"]),
        image_grid_thw=torch.from_numpy(ref["image_grid_thw"]),
    )
    return pos[:, 0].numpy(), int(delta.item())


def test_full_chat_template_tokenize_path_equals_hf(hf, ckpt):
    """HF's one-call path (apply_chat_template with images, tokenize=True) gives the same ids."""
    rng = np.random.default_rng(77)
    images = random_images(rng, 2)
    parts = ["First:", IMAGE, "second:", IMAGE, "same object?"]
    messages = hf_messages(parts, think=False)
    it = iter(images)
    for part in messages[0]["content"]:
        if part["type"] == "image":
            part["image"] = next(it)
    ref = hf.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="np",
        enable_thinking=False,
    )
    template = (ckpt / "chat_template.jinja").read_text()
    cfg = load_processor_config(ckpt)
    _, grid = preprocess_images(images, cfg)
    ids = encode_prompt(
        load_tokenizer(ckpt / "tokenizer.json"), build_prompt_parts(template, parts, think=False), grid, merge_size=2
    )
    assert np.array_equal(ids.input_ids, ref["input_ids"][0])
    assert np.array_equal(ids.mm_token_type_ids, ref["mm_token_type_ids"][0])


def test_text_tokenizer_matches_hf(hf, ckpt):
    rng = np.random.default_rng(3)
    tok = load_tokenizer(ckpt / "tokenizer.json")
    for _ in range(50):
        text = random_text(rng, int(rng.integers(1, 30)))
        ids = encode_prompt(tok, text, None, merge_size=2)
        assert ids.input_ids.tolist() == hf.tokenizer(text)["input_ids"]
        assert not ids.mm_token_type_ids.any()


def test_id_expansion_equals_text_expansion(ckpt, template):
    rng = np.random.default_rng(12)
    tok = load_tokenizer(ckpt / "tokenizer.json")
    image_id = tok.token_to_id("<|image_pad|>")
    for n in (1, 3):
        prompt = build_prompt_parts(template, random_parts(rng, n), think=bool(rng.integers(0, 2)))
        grid = np.array([[1, 2 * int(a), 2 * int(b)] for a, b in rng.integers(1, 20, (n, 2))])
        short = np.asarray(tok.encode(prompt).ids)
        assert np.array_equal(
            expand_image_tokens(short, grid, 2, image_id), encode_prompt(tok, prompt, grid, merge_size=2).input_ids
        )


def test_mismatched_images_and_placeholders(ckpt, template):
    tok = load_tokenizer(ckpt / "tokenizer.json")
    prompt = build_prompt(template, "hi", 2, think=True)
    with pytest.raises(EdgekitError, match="2 '<\\|image_pad\\|>' placeholder\\(s\\) but 1 image grid"):
        encode_prompt(tok, prompt, np.array([[1, 4, 4]]), merge_size=2)
    with pytest.raises(EdgekitError, match="1 image grid"):
        expand_image_tokens(
            np.asarray(tok.encode(prompt).ids), np.array([[1, 4, 4]]), 2, tok.token_to_id("<|image_pad|>")
        )


def test_template_errors_are_edgekit_errors():
    text_only = "{% for m in messages %}{{ m.role }}: {{ m.content if m.content is string else '' }}\n{% endfor %}"
    with pytest.raises(EdgekitError, match="wrote 0 '<\\|image_pad\\|>' placeholder\\(s\\) for 1 image"):
        build_prompt(text_only, "q", 1, think=True)
    with pytest.raises(EdgekitError, match="chat template line 2"):
        render_chat("ok\n{% for x in %}", [])
    with pytest.raises(EdgekitError, match="boom"):
        render_chat("{{ raise_exception('boom') }}", [])


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(EdgekitError, match="tokenizer.json not found"):
        load_tokenizer(tmp_path)


@pytest.fixture(scope="module")
def assets(ckpt):
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.prompt_assets import PromptAssets

    return PromptAssets.from_checkpoint(open_checkpoint(ckpt))


def test_prepare_inputs_equals_hf_processor_and_rope(hf, ckpt, assets, tmp_path):
    from edgekit.model.prompt import prepare_inputs

    rng = np.random.default_rng(909)
    images = random_images(rng, 3)
    images[1].save(tmp_path / "cam.png")  # one image by path, as samples give them
    parts = random_parts(rng, 3)
    got = prepare_inputs(assets, parts, [images[0], tmp_path / "cam.png", images[2]], think=False)
    prompt = hf.tokenizer.apply_chat_template(
        hf_messages(parts, think=False), add_generation_prompt=True, tokenize=False, enable_thinking=False
    )
    ref = hf(text=[prompt], images=images, return_tensors="np")
    for key in ("input_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
        assert np.array_equal(got.hf_kwargs()[key], ref[key]), key
    ref_pos, ref_delta = hf_rope(ckpt, ref)
    assert np.array_equal(got.position_ids, ref_pos) and got.rope_delta == ref_delta


def test_prepare_inputs_text_only_and_slot_mismatch(assets):
    from edgekit.model.prompt import prepare_inputs

    got = prepare_inputs(assets, "Is the lane clear?", [], think=True)
    assert got.image_grid_thw.shape == (0, 3) and "pixel_values" not in got.hf_kwargs()
    assert np.array_equal(got.position_ids, np.broadcast_to(np.arange(len(got.input_ids)), (3, len(got.input_ids))))
    with pytest.raises(EdgekitError, match="2 image slot\\(s\\) but 1 image"):
        prepare_inputs(assets, [IMAGE, "a", IMAGE], [Image.new("RGB", (60, 60))], think=True)


def test_model_logits_with_our_inputs_equal_hf_processor_inputs(hf, ckpt, assets):
    """The decoder sees the same thing: logits from our arrays (and our explicit M-RoPE ids) equal HF's."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from edgekit.model.prompt import prepare_inputs

    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    rng = np.random.default_rng(31)
    images = random_images(rng, 2)
    got = prepare_inputs(assets, "Which way?", images, think=False)
    prompt = build_prompt(assets.chat_template, "Which way?", 2, think=False)
    ref = {k: torch.from_numpy(v) for k, v in hf(text=[prompt], images=images, return_tensors="np").items()}
    ours = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in got.hf_kwargs().items()}
    with torch.no_grad():
        ref_logits = model(**ref).logits
        our_logits = model(**ours, position_ids=torch.from_numpy(got.position_ids)[:, None]).logits
    assert torch.equal(our_logits, ref_logits)
