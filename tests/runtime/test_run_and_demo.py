"""`edgekit run` (the reference pipeline) on a generated driving scene, and `edgekit demo` end to end."""

from __future__ import annotations

import json

from edgekit.cli import main


def test_run_reference_on_generated_driving_image(tiny_ckpt, capsys):
    from edgekit.data.samples import load_samples

    sample = load_samples("driving")[0]
    assert (
        main(
            [
                "run",
                str(tiny_ckpt),
                "--image",
                str(sample.image),
                "--prompt",
                "What color is the traffic light?",
                "--max-new-tokens",
                "7",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert len(out["token_ids"]) >= 1 and out["backend"].startswith("reference")


def test_run_reference_matches_transformers_generate(tiny_ckpt):
    """The streamed reference answer is transformers' own greedy answer (the oracle is not re-implemented)."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from edgekit.data.images import load_image
    from edgekit.data.samples import load_samples
    from edgekit.runtime.pipeline import ReferencePipeline

    sample = load_samples("embodied")[1]
    image = load_image(sample.image)
    ans = ReferencePipeline(tiny_ckpt).answer(sample.question, [image], max_new_tokens=8)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_ckpt), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(tiny_ckpt))
    ip = AutoImageProcessor.from_pretrained(str(tiny_ckpt))
    px = ip(images=[image], return_tensors="pt")
    n = int(px["image_grid_thw"].prod()) // 4
    text = tok.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question + " /no_think"}]}],
        tokenize=False,
        add_generation_prompt=True,
    ).replace("<|image_pad|>", "<|image_pad|>" * n)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    mm = (ids == model.config.image_token_id).int()
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        mm_token_type_ids=mm,
        **px,
        max_new_tokens=8,
        do_sample=False,
    )
    expected = [t for t in out[0, ids.shape[1] :].tolist()]
    assert ans.token_ids == expected[: len(ans.token_ids)] and len(ans.token_ids) >= 1


def test_unreadable_image_is_one_line_error(tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["run", str(tiny_ckpt), "--image", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "broken.jpg" in err and "image" in err and "Traceback" not in err
    assert main(["run", str(tiny_ckpt), "--image", str(tmp_path / "missing.png")]) == 2
    assert "missing.png: image file not found" in " ".join(capsys.readouterr().err.split())


def test_malformed_sample_line_is_one_line_error(tmp_path, capsys):
    f = tmp_path / "s.jsonl"
    f.write_text('{"id": "a", "domain": "driving", "task": "short_answer", "image": "x.png", "question": "q"\n')
    assert main(["samples", "check", str(f)]) == 2
    assert "s.jsonl:1" in capsys.readouterr().err


def test_demo_end_to_end(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path / "demo"), "--max-new-tokens", "6"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "driving" in out and "embodied" in out and "reference:" in out and "bundle:" in out
    from edgekit.bundle.manifest import verify_bundle

    assert verify_bundle(tmp_path / "demo" / "bundle-cpu-int4").ok
    # numbers, not only that it ran: the int4 bundle follows the reference's next-token distribution closely
    from edgekit.bench.demo import run_demo

    _, rows = run_demo(tmp_path / "demo", max_new_tokens=6, log=lambda m: None)  # reuses checkpoint and bundle
    # Measured on the tiny checkpoint (6 tokens, GPTQ int4 by default): KL 1.0e-3 / 7.5e-4, agreement 6/6 and 4/6;
    # a broken bundle (wrong tensor, wrong positions) gives KL above 1 and agreement near 0.
    for r in rows:
        assert 0.0 <= r.first_token_kl < 0.01, r
        assert r.token_agreement >= 0.5, r
