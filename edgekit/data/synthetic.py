"""Drawn driving and table-top scenes with exact ground truth, for calibration and smoke evaluation.

Every object is drawn with flat colours (no anti-aliasing), and its box is read back from a
mask of exactly the pixels it painted, so grounding answers are correct to the pixel.
Image sizes are multiples of 28 (Qwen2.5-VL's patch 14 x merge 2): the model's resize keeps
them, so its pixel coordinates are the file's pixel coordinates.
Scene i of a domain depends only on (seed, domain, i), so a longer set extends a shorter one.

Regenerate the shipped set: python -m edgekit.data.synthetic --out edgekit/data/assets --n 24 --seed 0
"""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

from edgekit.atomic import write_bytes, write_text
from edgekit.data.scene import SOURCE, TASK_ORDER, Scene
from edgekit.data.synthetic_driving import driving_scene
from edgekit.data.synthetic_embodied import embodied_scene

# ---------------------------------------------------------------- sample sets


def scene_rng(domain: str, seed: int | str, index: int) -> random.Random:
    return random.Random(
        f"edgekit-synthetic/{domain}/{seed}/{index}"
    )  # str seeds hash with SHA-512: stable across runs


def make_scene(domain: str, seed: int | str, index: int) -> Scene:
    """Scene `index` of `domain` under `seed` (an integer, or a namespace string such as edgekit.train's)."""
    rng = scene_rng(domain, seed, index)
    return driving_scene(rng) if domain == "driving" else embodied_scene(rng)


def sample_records(domain: str, seed: int, n: int) -> list[tuple[dict, bytes]]:
    """`n` JSONL records of one domain with their PNG bytes. Scene i gives one sample, task
    TASK_ORDER[i % 5]; even scenes are calib, odd ones eval, so the splits share no image."""
    out = []
    for i in range(n):
        scene = make_scene(domain, seed, i)
        task = TASK_ORDER[i % len(TASK_ORDER)]
        q = next(q for q in scene.questions if q.task == task)
        name = f"{domain}_{seed}_{i:03d}.png"
        w, h = scene.image.size
        rec = {
            "id": f"synthetic_{domain}_{seed}_{i:03d}_{task}",
            "domain": domain,
            "task": task,
            "image": name,
            "question": q.question,
            "answer": q.answer,
            "split": "calib" if i % 2 == 0 else "eval",
            "source": SOURCE,
            "coords": f"absolute pixels, {w}x{h} image; boxes include both end pixels",
            "seed": seed,
            "scene": i,
        }
        if q.choices is not None:
            rec["choices"], rec["answer_text"] = q.choices, q.answer_text
        if q.box is not None:
            rec["box"] = list(q.box)
        if q.point is not None:
            rec["point"] = list(q.point)
        if q.target is not None:
            rec["target"] = q.target
        buf = io.BytesIO()
        scene.image.save(buf, format="PNG", optimize=True)  # no timestamps or text chunks: same pixels, same bytes
        out.append((rec, buf.getvalue()))
    return out


def write_sample_set(
    out: str | Path, n: int, seed: int = 0, domains: tuple[str, ...] = ("driving", "embodied")
) -> list[Path]:
    """Write <domain>.jsonl plus PNGs into `out` (flat, so package data globs pick them up)."""
    import re

    from edgekit.outputs import claim_dir

    out = Path(out)
    own = re.compile(r"(driving|embodied)(\.jsonl|_\d+_\d+\.png)")
    claim_dir(out, [], ours=lambda name: bool(own.fullmatch(name)), what="sample set")  # never over a user's files
    written = []
    for domain in domains:
        lines = []
        for rec, png in sample_records(domain, seed, n):
            write_bytes(out / rec["image"], png)
            lines.append(json.dumps(rec, sort_keys=True))
        path = out / f"{domain}.jsonl"
        write_text(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate the synthetic driving + embodied sample set.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--n", type=int, default=24, help="samples per domain")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for path in write_sample_set(args.out, args.n, args.seed):
        print(path)


if __name__ == "__main__":
    main()
