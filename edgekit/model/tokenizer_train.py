"""Train the byte-level BPE tokenizer that generated checkpoints ship.

It has the structure of Qwen2 / MiMo tokenizers, so every consumer (transformers, llama.cpp's
"qwen2" pre-tokenizer, edgekit's GGUF writer) is exercised on the real shape: NFC normaliser,
Qwen2's split regex, byte-level alphabet, BPE merges, then the Qwen2.5-VL special tokens appended
after the learned vocabulary. The corpus is generated deterministically, so the same vocabulary
size gives the same bytes.
"""

from __future__ import annotations

import random

# Qwen2's pre-tokenizer split (what llama.cpp calls pre-tokenizer "qwen2").
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (content, special). Order and flags follow Qwen2.5-VL's added tokens; MiMo adds <think>, </think>.
ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<think>", False),
    ("</think>", False),
)

_SUBJECTS = (
    "car",
    "truck",
    "bus",
    "pedestrian",
    "cyclist",
    "traffic light",
    "stop sign",
    "lane",
    "road",
    "crosswalk",
    "ego vehicle",
    "intersection",
    "motorcycle",
    "van",
    "barrier",
    "cone",
    "sidewalk",
    "parking lot",
    "cup",
    "bowl",
    "plate",
    "box",
    "drawer",
    "table",
    "shelf",
    "mug",
    "bottle",
    "sponge",
    "apple",
    "banana",
    "robot arm",
    "gripper",
    "basket",
    "container",
    "book",
    "spoon",
    "knife",
    "cabinet",
    "microwave",
    "sink",
)
_COLORS = ("red", "green", "yellow", "blue", "white", "black", "orange", "gray", "brown", "purple")
_RELATIONS = ("left of", "right of", "in front of", "behind", "next to", "on top of", "inside", "under", "near")
_VERBS = (
    "stop",
    "slow down",
    "turn left",
    "turn right",
    "keep going",
    "change lanes",
    "yield",
    "accelerate",
    "pick up",
    "place",
    "open",
    "close",
    "push",
    "pull",
    "grasp",
    "move",
    "pour",
    "wipe",
)
_QUESTIONS = (
    "What color is the {c}?",
    "Where is the {s}?",
    "Is there a {s} {r} the {t}?",
    "How many {s}s are visible?",
    "What should the ego vehicle do next?",
    "Point to the {c} {s}.",
    "Give the bounding box of the {s}.",
    "Which object is closest to the camera?",
    "Can the robot {v} the {s}?",
    "What is the state of the {s}?",
    "Describe the scene.",
    "Answer with the option letter.",
    "Where can the {s} be placed?",
)
_ANSWERS = (
    "The {s} is {c}.",
    "The {s} is {r} the {t}.",
    "The ego vehicle should {v}.",
    "Yes.",
    "No.",
    '{{"bbox_2d": [{x}, {y}, {x2}, {y2}], "label": "{s}"}}',
    '{{"point_2d": [{x}, {y}]}}',
    "({L}) {v} the {s}",
    "There are {n} {s}s.",
    "First, {v}. Then {v2} and check the {s}.",
)


_SYLLABLES = (
    "ka",
    "ro",
    "mi",
    "te",
    "lu",
    "sa",
    "ne",
    "po",
    "ri",
    "da",
    "ve",
    "go",
    "zu",
    "fi",
    "ba",
    "le",
    "tor",
    "men",
    "ing",
    "tion",
    "er",
    "al",
    "ous",
    "pre",
    "con",
    "str",
    "ight",
    "ward",
    "ly",
    "ment",
)
_CHAT_LINES = ("system", "user", "assistant", "You are a helpful assistant.", "Picture 1:", "Let me think.")


def _pseudo_words(rng: random.Random, n: int) -> list[str]:
    """Distinct made-up words so the BPE trainer can learn as many merges as a preset asks for."""
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def training_corpus(n_lines: int, seed: int = 0) -> list[str]:
    """Deterministic English-like lines about driving and table-top scenes."""
    rng = random.Random(seed)
    lexicon = _pseudo_words(rng, max(200, n_lines // 2))
    lines = list(_CHAT_LINES)
    for _ in range(n_lines):
        # Zipf-like draw: frequent words early in the lexicon, a long tail after.
        head = " ".join(lexicon[min(len(lexicon) - 1, int(rng.paretovariate(0.8)) - 1)] for _ in range(3))
        tail = head + " " + " ".join(rng.choice(lexicon) for _ in range(4))
        lines.append(tail)
        fill = dict(
            s=rng.choice(_SUBJECTS),
            t=rng.choice(_SUBJECTS),
            c=rng.choice(_COLORS),
            r=rng.choice(_RELATIONS),
            v=rng.choice(_VERBS),
            v2=rng.choice(_VERBS),
            n=rng.randint(0, 12),
            L="ABCDE"[rng.randint(0, 4)],
            x=rng.randint(0, 1919),
            y=rng.randint(0, 1079),
            x2=rng.randint(0, 1919),
            y2=rng.randint(0, 1079),
        )
        lines.append(rng.choice(_QUESTIONS).format(**fill) + " " + rng.choice(_ANSWERS).format(**fill))
    return lines


def train_tokenizer(vocab_size: int, seed: int = 0):
    """Return a `tokenizers.Tokenizer`: `vocab_size` learned tokens, then ADDED_TOKENS."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(training_corpus(max(4000, vocab_size * 4), seed), trainer=trainer)
    from tokenizers import AddedToken

    for content, special in ADDED_TOKENS:
        added = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    return tok
