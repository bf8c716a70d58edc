"""`quantize(model, out, QuantizeConfig)`: calibrate the decoder and write it in its format, with a report.

The verb behind `edgekit quantize` (the CLI maps its options 1:1 onto `QuantizeConfig`):
  1. (mixed precision) measure each linear group's sensitivity and choose a format per group (mixed.py);
  2. calibrate layer by layer (calibrate.py; resumable cache);
  3. (optional) KL(FP‖Q) on held-out samples against the full-precision model (evaluate.py);
  4. write a GGUF (gguf:* formats) or a ModelOpt unified checkpoint (nvidia:w4a16, int8:channel), codes
     packed as calibrated, never re-rounded, and the report beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.quant.formats import Format, parse, parse_list

Progress = Callable[[str, str, int, int | None], None]  # (stage, description, done, total)


@dataclass(frozen=True)
class QuantizeConfig:
    format: Format
    method: str = "gptq"
    samples: str = "default"
    n_samples: int = 64
    damp: float = 0.01
    act_order: bool = False
    weighted_fit: bool = True
    alpha: float = 0.5
    evaluate: int = 8  # held-out samples for KL(FP‖Q); 0 skips
    budget_bits: float | None = None  # mixed precision: average bits per decoder weight
    candidates: tuple[Format, ...] = ()  # formats --budget-bits may choose from
    edge_layers: int = 0
    edge_format: Format | None = None
    lm_head: Format | None = None
    embeddings: Format | None = None
    seed: int = 0

    @property
    def mixed(self) -> bool:
        return self.budget_bits is not None or self.edge_layers > 0

    def check(self, out: Path) -> None:
        """Refuse combinations before any calibration work."""
        fmt = self.format
        if fmt.container != "gguf" and out.suffix == ".gguf":
            raise EdgekitError(
                f"{fmt.name} is written as a ModelOpt unified checkpoint directory: give --out DIR, not {out}"
            )
        if (self.mixed or self.lm_head or self.embeddings) and fmt.container != "gguf":
            raise EdgekitError("--budget-bits, --edge-layers, --lm-head and --embeddings apply to GGUF formats")


DEFAULT_CANDIDATES = "gguf:q4_k,gguf:q5_k,gguf:q6_k,gguf:q8_0"


def candidate_formats(text: str) -> tuple[Format, ...]:
    return tuple(parse_list(text))


def calibration_config(cfg: QuantizeConfig, overrides: tuple = ()):
    from edgekit.quant.calibrate import QuantConfig

    return QuantConfig(
        method=cfg.method,
        grid=cfg.format.grid_name,
        samples=cfg.samples,
        n_samples=cfg.n_samples,
        damp=cfg.damp,
        act_order=cfg.act_order,
        weighted_fit=cfg.weighted_fit,
        alpha=cfg.alpha,
        seed=cfg.seed,
        grid_overrides=tuple(overrides),
    )


def mixed_overrides(
    model: Path, cfg: QuantizeConfig, progress: Progress | None = None, device=None
) -> tuple[tuple, dict]:
    """Measure sensitivity and choose a format per linear group: (QuantConfig.grid_overrides, report)."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.mixed import average_bits, choose_grids, fixed_edge_layers, measure_sensitivity

    edge_fmt = cfg.edge_format or parse("gguf:q8_0")
    formats = sorted({cfg.format, edge_fmt, *cfg.candidates}, key=lambda f: f.name)
    edge = fixed_edge_layers(open_checkpoint(model).text.num_layers, cfg.edge_layers)
    groups = measure_sensitivity(
        model,
        formats,
        cfg.samples,
        min(cfg.n_samples, 16),
        on_layer=(lambda i, t: progress("sensitivity", "sensitivity", i + 1, t)) if progress else None,
        device=device,
    )
    choice = choose_grids(groups, cfg.budget_bits, cfg.format.name, edge, edge_fmt.name if cfg.edge_layers else None)
    counts = {g: sum(1 for v in choice.values() if v == g) for g in sorted(set(choice.values()))}
    report = {
        "budget_bits": cfg.budget_bits,
        "average_bits": average_bits(groups, choice),
        "edge_layers": cfg.edge_layers,
        "formats_per_group": counts,
        "choice": dict(sorted(choice.items())),
        "sensitivity": {g.key: g.error for g in groups},
    }
    return tuple(sorted((k, v) for k, v in choice.items() if v != cfg.format.name)), report


REPORT_SCHEMA = "edgekit.quantization/1"


def claim_outputs(model: Path, out: Path, cfg: QuantizeConfig, cache: Path, *, force: bool) -> Path:
    """Refuse, before any work, an --out over an input or a user's file; returns the report's path."""
    from edgekit.export.modelopt_unified import DIGEST_FILE, EXTRA_FILES
    from edgekit.outputs import claim_dir, claim_file, is_edgekit_gguf, is_json_with_schema, spec_paths

    inputs = [model, cache, *spec_paths(cfg.samples)]
    if cfg.format.container == "gguf":
        report = out.with_suffix(".quantization.json")
        claim_file(out, inputs, force=force, ours=is_edgekit_gguf)
        claim_file(report, inputs, force=force, ours=is_json_with_schema(REPORT_SCHEMA))
        return report
    fixed = {
        "config.json",
        "hf_quant_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        DIGEST_FILE,
        "quantization.json",
        *EXTRA_FILES,
    }
    claim_dir(
        out,
        inputs,
        what="unified checkpoint",
        ours=lambda name: name in fixed or (name.startswith("model-") and name.endswith(".safetensors")),
    )
    return out / "quantization.json"


def quantize(
    model: str | Path,
    out: str | Path,
    cfg: QuantizeConfig,
    cache: str | Path,
    progress: Progress | None = None,
    *,
    force: bool = False,
    device: str = "cpu",
) -> dict:
    """Calibrate, (evaluate,) write `out`; returns the report (also written as JSON beside the output). force: replace
    an existing output file that edgekit did not write (never an input). device: where the torch work runs."""
    from edgekit.atomic import write_json
    from edgekit.quant.calibrate import calibrate

    from edgekit.devices import resolve_device

    model, out = Path(model), Path(out)
    cfg.check(out)
    device = resolve_device(device)
    report_path = claim_outputs(model, out, cfg, Path(cache), force=force)
    overrides, mixed_report = mixed_overrides(model, cfg, progress, device) if cfg.mixed else ((), None)
    qcfg = calibration_config(cfg, overrides)
    result = calibrate(
        model,
        qcfg,
        cache,
        on_layer=(
            lambda i, t, status: progress(
                "calibrate", f"{cfg.method} on {cfg.format.name}: layer {i} {status}", i + 1, t
            )
        )
        if progress
        else None,
        device=device,
    )
    errors = result.layer_errors
    report = {
        "schema": REPORT_SCHEMA,
        "method": cfg.method,
        "grid": cfg.format.name,
        "calibration": result.record,
        "mixed_precision": mixed_report,
        "layer_errors": dict(sorted(errors.items())),
        "worst_layers": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:8]),
    }
    if cfg.evaluate:
        from edgekit.quant.evaluate import kl_against_reference

        report["fidelity"] = kl_against_reference(
            model, {cfg.method: result}, qcfg, n_eval=cfg.evaluate, device=device
        )[cfg.method]
    if cfg.format.container == "gguf":
        from edgekit.export.gguf import write_decoder_gguf
        from edgekit.quant.mixed import linear_type_overrides

        types = linear_type_overrides(dict(overrides))
        if cfg.lm_head:
            types["lm_head.weight"] = cfg.lm_head
        if cfg.embeddings:
            types["model.embed_tokens.weight"] = cfg.embeddings
        write_decoder_gguf(model, out, cfg.format, calibrated=result, type_overrides=types)
        write_json(report_path, report)
    else:
        from edgekit.export.modelopt_reader import verify_unified_checkpoint
        from edgekit.export.modelopt_unified import write_unified_checkpoint

        report["unified"] = write_unified_checkpoint(model, out, result)
        report["unified_check"] = verify_unified_checkpoint(out)
        write_json(report_path, report)
    return report
