"""`edgekit train-toy`: deterministic, resumable after kill -9, a normal checkpoint out, and never a held-out scene in."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.cli import main

QUICK = ["--preset", "tiny", "--batch", "2", "--eval-per-task", "0"]


def _weights(out: Path) -> bytes:
    return (out / "model.safetensors").read_bytes()


def _png_digest(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_training_scenes_are_never_heldout_or_shipped_scenes():
    from edgekit.data.synthetic import make_scene
    from edgekit.train.examples import heldout_samples, training_sample
    from edgekit.train.recipe import DEFAULT_TASK_WEIGHTS

    train = {_png_digest(training_sample(0, i, DEFAULT_TASK_WEIGHTS).image) for i in range(40)}
    held = {_png_digest(s.image) for s in heldout_samples(0, 4)}
    shipped = {_png_digest(make_scene(d, 0, i).image) for d in ("driving", "embodied") for i in range(20)}
    assert len(train) == 40 and len(held) == 40
    assert not train & held and not train & shipped and not held & shipped


def test_grounding_answers_are_in_the_pixels_the_model_sees(tmp_path):
    from edgekit.model.fixtures import make_tiny
    from edgekit.model.processor import load_processor_config
    from edgekit.runtime.torch_ref import TorchReference
    from edgekit.train.batch import seen_frame, teacher_forced
    from edgekit.train.examples import scene_sample, seen_answer

    init = make_tiny(tmp_path / "init", "tiny", 0, plant_outliers=False, max_pixels=64 * 28 * 28)
    ref, processor = TorchReference(init), load_processor_config(init)
    for domain, index in (("driving", 2), ("embodied", 7)):
        ex = scene_sample("heldout/0", domain, index, "box_grounding")
        frame = seen_frame(processor, ex.image)
        inputs = ref.prepare(ex.sample.question, [ex.image])
        _, h, w = inputs.image_grid_thw[0].tolist()
        assert frame.seen == (w * 14, h * 14) and frame.seen[0] < ex.image.size[0]  # what HF's processor made
        box = json.loads(seen_answer(ex.sample, frame))["bbox_2d"]
        sx, sy = frame.seen[0] / ex.image.size[0], frame.seen[1] / ex.image.size[1]
        assert box == [
            round(ex.sample.box[0] * sx),
            round(ex.sample.box[1] * sy),
            round(ex.sample.box[2] * sx),
            round(ex.sample.box[3] * sy),
        ]
        full, n_prompt = teacher_forced(ref, processor, ex, "option_text")
        assert ref.tokenizer.decode(full.input_ids[0, n_prompt:]) == seen_answer(ex.sample, frame) + "<|im_end|>"


def test_a_multiple_choice_answer_is_the_options_words_and_scores_as_its_letter():
    from edgekit.bench.scoring import ImageFrame, score_reply
    from edgekit.train.examples import scene_sample, seen_answer

    for domain, index in (("driving", 0), ("driving", 5), ("embodied", 0), ("embodied", 10)):
        s = scene_sample("train/3", domain, index, "multiple_choice").sample
        frame = ImageFrame((1, 1), (1, 1))
        words = seen_answer(s, frame, "option_text")
        assert words == s.choices[ord(s.answer) - ord("A")] and words.strip()
        assert seen_answer(s, frame, "letter_and_text") == f"{s.answer}. {words}"
        assert score_reply(s, words, think=False)["score"] == 1.0
        wrong = next(c for c in s.choices if c != words)
        assert score_reply(s, wrong, think=False)["score"] == 0.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _state_step(state: Path) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(str(state), "pt") as f:
            return int(f.metadata()["step"])
    except Exception:  # not written yet
        return None


@pytest.mark.slow
def test_same_seed_and_steps_same_bytes_after_a_kill_9_and_a_normal_checkpoint_out(tmp_path):
    args = [*QUICK, "--steps", "7", "--save-every", "0"]
    whole = tmp_path / "whole"
    assert main(["train-toy", str(whole), *args]) == 0

    out = tmp_path / "killed"
    state = out / ".train" / "state.safetensors"
    cmd = [sys.executable, "-m", "edgekit.cli", "train-toy", str(out), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 300
    while (_state_step(state) or 0) < 3:
        assert proc.poll() is None, f"finished before step 3: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < end, "never reached step 3"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _state_step(state)
    assert 3 <= killed_at < 7 and not (out / "edgekit_training.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed at step" in done.stdout
    assert _weights(out) == _weights(whole)  # same seed and steps, same bytes: across processes and a kill

    other = tmp_path / "seed1"
    assert main(["train-toy", str(other), *QUICK, "--steps", "1", "--seed", "1"]) == 0
    assert _weights(other) != _weights(whole)
    assert main(["train-toy", str(other), *QUICK, "--steps", "2", "--seed", "1"]) == 0  # a finished run continues
    assert json.loads((other / "edgekit_training.json").read_text())["steps"] == 2
    _is_a_normal_checkpoint(whole, steps=7)


def _is_a_normal_checkpoint(out: Path, steps: int) -> None:
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.runtime.torch_ref import TorchReference
    from edgekit.train.examples import heldout_samples

    trained, start = open_checkpoint(out), open_checkpoint(out / ".train" / "init")
    assert set(trained.tensors) == set(start.tensors) and trained.text == start.text and trained.vision == start.vision
    assert {t.dtype for t in trained.tensors.values()} == {"BF16"}
    assert json.loads((out / "preprocessor_config.json").read_text())["max_pixels"] == 64 * 28 * 28
    record = json.loads((out / "edgekit_training.json").read_text())
    assert record["steps"] == steps and record["examples"] == 2 * steps and record["recipe"]["seed"] == 0
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert main(["inspect", str(out), "--json"]) == 0
    ref = TorchReference(out)  # transformers loads it and answers
    ex = heldout_samples(0, 1, ("short_answer",))[0]
    assert isinstance(ref.decode(ref.generate(ref.prepare(ex.sample.question, [ex.image]), max_new_tokens=4)), str)


def test_another_recipe_or_a_damaged_state_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-toy", str(out), *QUICK, "--steps", "1"]) == 0
    assert main(["train-toy", str(out), *QUICK, "--steps", "2", "--lr", "0.01"]) != 0
    err = capsys.readouterr().err.strip()
    assert "another recipe" in err and "lr" in err and len(err.splitlines()) == 1
    (out / ".train" / "state.safetensors").write_bytes(b"\x00" * 100)
    assert main(["train-toy", str(out), *QUICK, "--steps", "2"]) != 0
    err = capsys.readouterr().err.strip()
    assert "training state" in err and len(err.splitlines()) == 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    assert main(["train-toy", str(foreign), *QUICK, "--steps", "1"]) != 0
    assert "notes.txt" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "a user's file"
    assert main(["train-toy", str(tmp_path / "x"), *QUICK]) != 0
    assert "--steps or --minutes" in capsys.readouterr().err
    assert main(["train-toy", str(tmp_path / "y"), *QUICK, "--steps", "1", "--choice-reply", "letter"]) != 0
    err = capsys.readouterr().err.strip()
    assert "option_text" in err and len(err.splitlines()) == 1


def test_the_heldout_table_comes_with_its_mismatched_image_control(tmp_path, capsys):
    from edgekit.data.scene import TASK_ORDER

    out = tmp_path / "run"
    assert (
        main(["train-toy", str(out), "--preset", "tiny", "--batch", "2", "--steps", "1", "--eval-per-task", "1"]) == 0
    )
    assert "mismatched" in capsys.readouterr().out
    record = json.loads((out / "edgekit_training.json").read_text())
    for key in ("heldout", "heldout_mismatched"):
        assert set(record[key]) == set(TASK_ORDER)
        assert all(row["all"]["n"] == 2 and 0 <= row["all"]["mean"] <= 1 for row in record[key].values())
    assert 0 < record["heldout"]["multiple_choice"]["chance"] < 1
