"""Data parallelism under torchrun with gloo: two processes compute the one-process gradient and loss.

Gloo's reductions are not trusted (pytorch #162338: AVG under FSDP2): the gradients of a step on an odd batch
(3 sequences, split 2 + 1) are compared against one process's, and a 2-process `torchrun -m edgekit.qat` run
against a 1-process run after 10 distillation steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgekit.cli import main


def _student(ckpt: Path, cache: Path, world: int):
    from edgekit.qat.block_phase import quantized_layer
    from edgekit.qat.student import BlockStudent
    from edgekit.quant.calibrate import QuantConfig, calibrate
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.layers import hf_config, rotary

    init = calibrate(ckpt, QuantConfig(method="rtn", grid="gguf:q4_k", n_samples=4), cache)
    hf = hf_config(ckpt)
    layer = quantized_layer(open_checkpoint(ckpt), hf, 1, init.quantized, {}, "original")
    return BlockStudent(layer, rotary(hf), world)


def _batch(hidden: int):
    g = torch.Generator().manual_seed(7)
    lengths = (5, 11, 8)
    xs = [torch.randn(1, n, hidden, generator=g) for n in lengths]
    ts = [x + 0.1 * torch.randn(x.shape, generator=g) for x in xs]
    pos = [torch.arange(n).expand(3, n) for n in lengths]
    return xs, ts, pos, float(sum(t.square().sum() for t in ts))


def _grads(student, shard: list[int], wrap) -> tuple[float, dict[str, torch.Tensor]]:
    xs, ts, pos, norm = _batch(student.qlayer.layer.hidden_size)
    wrapped = wrap(student)  # kept alive through backward: DDP's reducer all-reduces from its hooks
    loss = wrapped([xs[i] for i in shard], [ts[i] for i in shard], [pos[i] for i in shard], norm)
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in student.named_parameters() if p.requires_grad}


def _rank(rank: int, ckpt: str, cache: str, out: str, port: int) -> None:
    import torch.distributed as dist

    from edgekit.qat.parallel import Group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = Group(rank, 2)
    student = _student(Path(ckpt), Path(cache), 2)
    loss, grads = _grads(student, group.shard([0, 1, 2]), group.wrap)
    if rank == 0:
        from safetensors.torch import save_file

        save_file(grads, out, metadata={"loss": repr(group.total(loss) / 2)})
    else:
        group.total(loss)
    dist.destroy_process_group()


def test_two_gloo_processes_compute_the_one_process_gradient(tiny_ckpt, tmp_path):
    import socket

    from safetensors import safe_open

    cache = tmp_path / "calib"
    one_loss, one = _grads(_student(tiny_ckpt, cache, 1), [0, 1, 2], lambda m: m)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "grads.safetensors"
    torch.multiprocessing.spawn(_rank, args=(str(tiny_ckpt), str(cache), str(out), port), nprocs=2)
    with safe_open(str(out), framework="pt") as f:
        two_loss = float(f.metadata()["loss"])
        two = {k: f.get_tensor(k) for k in f.keys()}
    assert set(two) == set(one)
    assert abs(two_loss - one_loss) <= 1e-5 * abs(one_loss)
    for k in one:
        assert one[k].abs().sum() > 0, k
        # the two ranks' partial sums are added in another order than one process adds them: float32 rounding
        rel = float((two[k] - one[k]).norm() / one[k].norm())
        assert rel < 1e-5, (k, rel)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_after_ten_steps(tiny_ckpt, tmp_path):
    args = [
        "--format",
        "gguf:q4_k",
        "--init",
        "rtn",
        "--calib-n",
        "6",
        "--batch",
        "3",
        "--block-epochs",
        "0",
        "--steps",
        "10",
        "--checkpoint-every",
        "5",
        "--cache",
        str(tmp_path / "calib"),
    ]
    assert main(["qat", str(tiny_ckpt), *args, "--out", str(tmp_path / "one")]) == 0
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "edgekit.qat",
            str(tiny_ckpt),
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "edgekit-qat.json").read_text()) for d in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    a, b = one["losses"]["distill_last"][0], two["losses"]["distill_last"][0]
    assert one["losses"]["distill_first"][0] > a  # it trained
    assert abs(a - b) <= 1e-4 * abs(a), (a, b)
