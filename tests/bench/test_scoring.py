"""Scoring rules by task type on hand-made replies (edgekit/bench/scoring.py), and ROUGE-L against brute force."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit import metrics as M
from edgekit.bench import scoring as SC
from edgekit.data.samples import Sample

CHOICES = ("Slow down", "Keep driving", "Stop the car", "Turn left")


def _mc(answer="B") -> Sample:
    return Sample(
        id="m",
        domain="driving",
        task="multiple_choice",
        image=Path("/x.png"),
        question="q",
        answer=answer,
        choices=CHOICES,
    )


@pytest.mark.parametrize(
    "reply,think,right",
    [
        ("B", False, True),
        ("B. Keep driving", False, True),
        ("(B) because the road is clear", False, True),
        ("The answer is \\boxed{B}.", False, True),
        ("\\boxed{(B)}", False, True),
        ("Options A and C are unsafe, so \\boxed{B}", False, True),  # \boxed{} wins over the letters around it
        ("\\boxed{Keep driving}", False, True),  # boxed option text
        ("I would keep driving here.", False, True),  # the one option text quoted
        ("<think>A is too cautious, C stops for nothing</think>\nB", True, True),
        ("<think>\n\n</think>\n\nB.", False, True),  # the no-think prompt's empty block echoed back
        ("<think>maybe B, maybe C", True, False),  # never closed its think block: no answer
        ("A or B", False, False),  # two letters: ambiguous
        ("A car ahead is slow, so keep driving", False, False),  # VLMEvalKit reads the article 'A' as an option
        ("Slow down and stop the car", False, False),  # two option texts
        ("C", False, False),
        ("", False, False),
        ("b", False, False),  # letters are upper case, as in VLMEvalKit
    ],
)
def test_multiple_choice_extraction(reply, think, right):
    assert SC.score_reply(_mc(), reply, think=think)["score"] == float(right)


def test_choice_letters_beyond_the_options_do_not_count():
    assert SC.extract_choice("E", CHOICES) is None
    assert SC.extract_choice("E. Keep driving? No: D", CHOICES) == "D"


def test_think_mode_scores_only_after_the_last_think_end():
    reply = "<think>first thought: C</think> hmm <think>B after all</think> answer: B"
    assert SC.final_answer(reply, think=True) == "answer: B"
    assert SC.final_answer("B", think=False) == "B"
    assert SC.final_answer("B", think=True) == ""


@pytest.mark.parametrize(
    "reference,reply,right",
    [
        ("No.", "no", True),
        ("No.", "No, it is not moving.", True),
        ("Yes.", "yes, two of them", True),
        ("Yes.", "It is yes", False),  # MME: yes/no must lead the answer
        ("Yes.", "No.", False),
        ("white", "White.", True),
        ("white", "The bookshelf is white.", False),
        ("One car is parked.", "1 car is parked", True),
        ("Two trucks are moving.", "Three trucks are moving.", False),
    ],
)
def test_short_answer_normalised_exact_match_and_mme_yes_no(reference, reply, right):
    s = Sample(id="s", domain="driving", task="short_answer", image=Path("/x.png"), question="q", answer=reference)
    assert SC.score_reply(s, reply, think=False)["score"] == float(right)


def test_rouge_l_matches_brute_force_lcs(test_seed):
    rng = random.Random(test_seed)
    vocab = "car lane red light stop go left right truck".split()
    for _ in range(60):
        a = [rng.choice(vocab) for _ in range(rng.randint(0, 7))]
        b = [rng.choice(vocab) for _ in range(rng.randint(0, 7))]
        lcs = max(
            (
                k
                for k in range(min(len(a), len(b)) + 1)
                for sub in itertools.combinations(a, k)
                if _is_subsequence(sub, b)
            ),
            default=0,
        )
        assert M._lcs_length(a, b) == lcs
        if a and b and lcs:
            p, r = lcs / len(a), lcs / len(b)
            assert M.rouge_l(a, b) == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))
    assert M.rouge_l([], []) == 1.0 and M.rouge_l(["a"], []) == 0.0


def _is_subsequence(sub, seq) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


def test_open_ended_is_rouge_l_of_normalised_words():
    s = Sample(
        id="o",
        domain="driving",
        task="open_ended",
        image=Path("/x.png"),
        question="q",
        answer="There is a red car ahead.",
    )
    assert SC.score_reply(s, "there is a RED car ahead", think=False)["score"] == 1.0
    assert SC.score_reply(s, "nothing", think=False)["score"] == 0.0


def test_iou_edge_cases():
    assert M.box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0  # disjoint
    assert M.box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges
    assert M.box_iou((0, 0, 10, 10), (2, 2, 7, 7)) == pytest.approx(25 / 100)  # contained
    assert M.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert M.box_iou((5, 5, 5, 5), (5, 5, 5, 5)) == 0.0  # degenerate: no area, no overlap to count
    assert M.box_iou((5, 5, 5, 9), (0, 0, 10, 10)) == 0.0


def test_boxes_are_mapped_back_through_a_non_square_resize():
    # the original is 1080x523; the model saw it at 448x224 and answered in those pixels
    frame = SC.ImageFrame(seen=(448, 224), original=(1080, 523))
    truth = (270.0, 130.75, 540.0, 392.25)
    s = Sample(
        id="b",
        domain="embodied",
        task="box_grounding",
        image=Path("/x.png"),
        question="q",
        answer=list(truth),
        box=truth,
    )
    seen = (truth[0] * 448 / 1080, truth[1] * 224 / 523, truth[2] * 448 / 1080, truth[3] * 224 / 523)
    json_reply = '```json\n[{"bbox_2d": [%.1f, %.1f, %.1f, %.1f], "label": "cup"}]\n```' % seen
    got = SC.score_reply(s, json_reply, think=False, frame=frame)
    assert got["score"] == 1.0 and got["iou"] == pytest.approx(1.0, abs=2e-3)
    plain = "[%d, %d, %d, %d]" % tuple(round(v) for v in seen)
    assert SC.score_reply(s, plain, think=False, frame=frame)["iou"] > 0.97
    # the same numbers read as original pixels (no mapping) miss the object
    assert SC.score_reply(s, plain, think=False, frame=SC.ImageFrame((1080, 523), (1080, 523)))["score"] == 0.0
    assert SC.score_reply(s, "no box here", think=False, frame=frame) == {"score": 0.0, "iou": 0.0}


def test_points_are_mapped_back_and_scored_by_mask_membership(tmp_path):
    w, h = 640, 480
    mask = np.zeros((h, w), np.uint8)
    mask[100:200, 300:400] = 255  # rows 100..199, columns 300..399
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.new("RGB", (w, h)).save(tmp_path / "img.png")
    s = Sample(
        id="p",
        domain="embodied",
        task="point_grounding",
        image=tmp_path / "img.png",
        question="q",
        answer=[[[300, 100], [399, 100], [399, 199], [300, 199]]],
        mask=tmp_path / "mask.png",
    )
    frame = SC.ImageFrame(seen=(336, 252), original=(w, h))  # x scale 640/336, y scale 480/252
    inside = (350 * 336 / w, 150 * 252 / h)
    outside = (100 * 336 / w, 150 * 252 / h)
    reply = f"[({inside[0]:.2f}, {inside[1]:.2f}), ({outside[0]:.2f}, {outside[1]:.2f})]"
    assert SC.score_reply(s, reply, think=False, frame=frame)["score"] == 0.5
    json_reply = '[{"point_2d": [%.2f, %.2f]}]' % inside
    assert SC.score_reply(s, json_reply, think=False, frame=frame)["score"] == 1.0
    assert SC.score_reply(s, "somewhere on the table", think=False, frame=frame)["score"] == 0.0
    # mask membership at the pixel edges: floor of the coordinate picks the pixel
    m = mask > 0
    assert M.fraction_in_mask([(300.0, 100.0), (399.99, 199.99), (400.0, 150.0), (299.99, 150.0)], m) == 0.5
    assert M.fraction_in_mask([(-1, 150), (350, 480)], m) == 0.0  # outside the image is a miss
