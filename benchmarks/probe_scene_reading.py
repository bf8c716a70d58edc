"""Where a trained toy stops reading a scene: the vision tower's tokens, or the decoder's routing (README: "A trained
checkpoint", issue #32).

1. Linear probes of the traffic light's state (red / yellow / green) from the vision tower's output on held-out
   driving scenes: from the one merged token that holds the lit lamp, and from the mean of all image tokens (what
   the decoder gets when its attention spreads evenly). 200 scenes fit, 100 scored.
2. The answer's first token's loss on held-out multiple-choice questions, per question, with the scene's own image
   and with another scene's (matched = mismatched: the decoder reads nothing from the image).

Regenerate:  python benchmarks/probe_scene_reading.py CHECKPOINT [CHECKPOINT ...] --out FILE.json
"""

from __future__ import annotations

import argparse
import collections
import math
from pathlib import Path

STATES = ("red", "yellow", "green")


def _image_tokens(ref, image):
    inputs = ref.prepare("What colour is the traffic light?", [image])
    return ref.image_embeddings(inputs.pixel_values, inputs.image_grid_thw)


def _probe_accuracy(features, labels, n_fit: int) -> float:
    """Held-out accuracy of a softmax regression (standardised features, small L2) fitted on the first n_fit."""
    import torch

    x = torch.stack(features)
    x = (x - x[:n_fit].mean(0)) / (x[:n_fit].std(0) + 1e-6)
    y = torch.tensor(labels)
    w = torch.zeros(x.shape[1], len(STATES), requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[:n_fit] @ w, y[:n_fit]) + 1e-3 * w.pow(2).sum()
        loss.backward()
        opt.step()
    return float(((x[n_fit:] @ w).argmax(1) == y[n_fit:]).float().mean())


def linear_probes(ref, processor, n_fit: int = 200, n_test: int = 100) -> dict:
    from edgekit.data.synthetic import make_scene
    from edgekit.model.processor import target_size

    lamp, mean, labels = [], [], []
    for i in range(n_fit + n_test):
        scene = make_scene("driving", "heldout/probe", i)
        light = next(t for t in scene.things if t.kind == "traffic_light")
        (width, height), (h, w) = scene.image.size, target_size(scene.image.size[1], scene.image.size[0], processor)
        tokens = _image_tokens(ref, scene.image)
        x, y = light.point[0] * w / width, light.point[1] * h / height
        grid = processor.factor
        lamp.append(tokens[int(y // grid) * (w // grid) + int(x // grid)])
        mean.append(tokens.mean(0))
        labels.append(STATES.index(light.attrs["state"]))
    return {
        "lamp_token": _probe_accuracy(lamp, labels, n_fit),
        "mean_of_tokens": _probe_accuracy(mean, labels, n_fit),
        "n_fit": n_fit,
        "n_test": n_test,
    }


def first_token_loss(ref, processor, per_domain: int = 60) -> dict:
    import torch

    from edgekit.train.batch import IGNORE, collate, teacher_forced
    from edgekit.train.examples import SceneSample, scene_sample

    losses = collections.defaultdict(lambda: ([], []))
    for domain in ("driving", "embodied"):
        for i in range(per_domain):
            ex = scene_sample("heldout/0", domain, i, "multiple_choice")
            other = scene_sample("heldout/0", domain, i + 1000, "multiple_choice").image
            key = ex.sample.question.split("?")[0]
            for k, image in enumerate((ex.image, other)):
                batch = collate([teacher_forced(ref, processor, SceneSample(ex.sample, image), "option_text")], 0)
                b, t = (batch.labels != IGNORE).nonzero()[0].tolist()
                with torch.no_grad():
                    hidden = ref.model.model(**batch.kwargs).last_hidden_state[b, t]
                    logp = torch.log_softmax(ref.model.lm_head(hidden).float(), -1)[batch.labels[b, t]]
                losses[key][k].append(-float(logp))
    return {q: {"n": len(m), "matched": sum(m) / len(m), "mismatched": sum(o) / len(o)} for q, (m, o) in losses.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from edgekit.atomic import write_json
    from edgekit.model.processor import load_processor_config
    from edgekit.runtime.torch_ref import TorchReference

    report = {}
    for path in args.checkpoints:
        ref = TorchReference(path)
        ref.model.eval()
        processor = load_processor_config(path)
        report[path] = {
            "linear_probe": linear_probes(ref, processor),
            "first_token_nll": first_token_loss(ref, processor),
        }
        probe = report[path]["linear_probe"]
        print(
            f"{path}: lamp token {probe['lamp_token']:.2f}, mean of tokens {probe['mean_of_tokens']:.2f} (chance 1/3)"
        )
        for q, row in report[path]["first_token_nll"].items():
            print(f"  {q[:48]:48s} n={row['n']:3d} matched {row['matched']:.3f} mismatched {row['mismatched']:.3f}")
    report["chance_nll"] = {"3 options": math.log(3), "8 colours": math.log(8)}
    write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
