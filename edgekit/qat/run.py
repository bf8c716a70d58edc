"""`edgekit qat`: quantization-aware training of the decoder on a format's own grid, from a PTQ init.

  1. PTQ init: `calibrate` with --init (rtn | awq | gptq) on the same format (its resumable cache);
  2. phase 1, block-wise reconstruction, streamed layer by layer (block_phase.py);
  3. phase 2, end-to-end distillation of the float scales on the teacher's logits (distill_phase.py);
  4. QAT_DIR: the checkpoint plus the trained codes and params (state.py), which `build` and `quantize` pack
     without rounding again.
Runs in one process, or data-parallel under torchrun (parallel.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.quant.formats import Format

INITS = ("rtn", "awq", "gptq")
StepFn = Callable[[str, int, int, float], None]  # (phase label, done, total, loss)


@dataclass(frozen=True)
class QATSettings:
    format: Format
    init: str = "gptq"
    samples: str = "default"
    n_samples: int = 64
    steps: int = 40  # phase 2 steps (what the README table measured)
    lr: float = 1e-4  # phase 2: Adam on the log of each float scale (3e-4 measured worse on held-out prompts)
    block_epochs: int = 2  # phase 1: passes over the calibration sequences per layer
    block_lr: float = 1e-2  # phase 1: Adam on the latent weights, in units of the init's grid step
    scale_lr: float = 0.0  # phase 1: the float scales too (off: measured to overfit the calibration set)
    batch: int = 4  # sequences per step (split across ranks)
    checkpoint_every: int = 10
    seed: int = 0
    # train with float activations even where the runtime quantizes them (FP8, NVFP4 W4A4); off: both phases
    # see the activations quantized under the init's input scales, with a straight-through gradient
    float_activations: bool = False

    def check(self) -> None:
        if not self.format.quantized:
            raise EdgekitError(f"--format {self.format.name} is a float format: nothing to train")
        if self.init not in INITS:
            raise EdgekitError(f"--init {self.init!r}: choose one of {', '.join(INITS)}")
        if self.format.name == "int8:channel" and self.init == "awq":
            raise EdgekitError("--init awq targets 4-bit formats; use rtn or gptq for int8:channel")
        for name, v in (("--steps", self.steps), ("--block-epochs", self.block_epochs)):
            if v < 0:
                raise EdgekitError(f"{name} must be >= 0, got {v}")
        for name, v in (
            ("--batch", self.batch),
            ("--n", self.n_samples),
            ("--checkpoint-every", self.checkpoint_every),
        ):
            if v < 1:
                raise EdgekitError(f"{name} must be >= 1, got {v}")

    def identity(self) -> dict:
        d = asdict(self)
        d["format"] = self.format.name
        return d


def run_qat(
    model: str | Path,
    out: str | Path,
    settings: QATSettings,
    cache: str | Path,
    on_step: StepFn | None = None,
    on_stage: Callable[[str], None] | None = None,
    device: str = "cpu",
) -> dict:
    """Train and write QAT_DIR `out`; resumes a killed run from out/.qat-work. Returns the record it wrote.
    `device`: where the layers train (edgekit.devices); not part of the run's identity, so a run can resume elsewhere."""
    from edgekit.devices import resolve_device
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.qat.block_phase import run_block_phase
    from edgekit.qat.distill_phase import layer_files, run_distill_phase
    from edgekit.qat.parallel import Group
    from edgekit.qat.state import check_out_dir, write_qat_dir
    from edgekit.quant.calibrate import QuantConfig, calibrate
    from edgekit.quant.layers import calibration_sequences, hf_config
    from edgekit.quant.trained import is_qat_dir

    from edgekit.outputs import refuse_overlap, spec_paths

    settings.check()
    torch_device = resolve_device(device)
    model, out = Path(model), Path(out)
    refuse_overlap(out, [model, Path(cache), *spec_paths(settings.samples)])
    if is_qat_dir(model):
        raise EdgekitError(f"{model}: is already a QAT checkpoint; train from the full-precision source")
    ck = open_checkpoint(model)
    grid = settings.format.grid
    for i in range(ck.text.num_layers):
        for w in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
            grid.check_width(ck.shape(f"model.layers.{i}.{w}.weight")[1])
    group = Group.from_env(torch_device)
    if settings.batch < group.world:
        raise EdgekitError(f"--batch {settings.batch} is smaller than the {group.world} processes sharing it")
    identity = {"source": ck.content_hash, "settings": settings.identity()}
    work = check_out_dir(out, identity) if group.is_writer else out / ".qat-work"
    group.barrier()
    stage = on_stage or (lambda s: None)
    stage(f"PTQ init: {settings.init} on {settings.format.name}")
    qcfg = QuantConfig(
        method=settings.init, grid=grid.name, samples=settings.samples, n_samples=settings.n_samples, seed=settings.seed
    )
    init = calibrate(model, qcfg, cache, device=group.device, data_free_rtn=True)  # QAT needs the codes only
    seqs, samples_hash = calibration_sequences(
        model, settings.samples, settings.n_samples, settings.seed, qcfg.resize_to
    )
    hf_cfg = hf_config(model)
    stage("phase 1: block-wise reconstruction")
    block_losses = run_block_phase(ck, hf_cfg, seqs, init, settings, work, group, on_step)
    files = layer_files(work, ck.text.num_layers, False)
    distill_losses = []
    if settings.steps:
        stage("phase 2: distillation of the scales")
        distill_losses = run_distill_phase(ck, hf_cfg, seqs, settings, work, group, on_step)
        files = layer_files(work, ck.text.num_layers, True)
    record = {
        "format": settings.format.name,
        "init": settings.init,
        "config": settings.identity(),
        "source": ck.content_hash,
        "samples_hash": samples_hash,
        "sequences": len(seqs),
        "losses": {
            "block_final": block_losses,
            "distill_first": distill_losses[:1],
            "distill_last": distill_losses[-1:],
        },
        "world_size": group.world,
    }
    if group.is_writer:
        write_qat_dir(out, ck, files, record)
    group.barrier()
    ck.close()
    group.close()
    return record
