"""Deployment targets as data: one TOML per device in edgekit/targets/recipes/ (package data), every number with its source."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError

TARGETS_DIR = Path(__file__).resolve().parent / "recipes"  # package data: ships in the wheel
REQUIRED = (
    "name",
    "description",
    "gpu_arch",
    "memory_gb",
    "memory_bandwidth_gbs",
    "fp16_tensor_tflops",
    "precisions",
    "backends",
    "camera_resolution",
    "max_visual_tokens",
    "reserved_gb",
)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    gpu_arch: str
    family: str
    memory_gb: float
    memory_bandwidth_gbs: float
    fp16_tensor_tflops: float
    int8_tensor_tops: float
    reserved_gb: float
    precisions: tuple[str, ...]
    backends: tuple[str, ...]
    camera_resolution: tuple[int, int]  # (width, height) in pixels
    max_visual_tokens: int
    fp8_tensor_tflops: float = 0.0  # dense; 0: no FP8 tensor cores
    fp4_tensor_tflops: float = 0.0  # dense; 0: no FP4 tensor cores (Blackwell has them)
    aliases: tuple[str, ...] = ()
    sources: dict = field(default_factory=dict)

    @property
    def is_nvidia(self) -> bool:
        return self.gpu_arch.startswith("sm_")

    def default_backend(self, precision: str | None = None) -> str:
        """The recipe's first backend, or its first that builds `precision` (nvfp4 on Thor: llama.cpp's GGUF)."""
        from edgekit.quant.precisions import builds_on

        fits = [b for b in self.backends if precision is None or builds_on(precision, b)]
        return (fits or self.backends)[0]

    def tensor_peak_tflops(self, compute: str) -> float:
        """Dense tensor-core peak in the arithmetic a GEMM runs in (edgekit.quant.formats: Format.compute); FP16's where
        the recipe gives no number for it."""
        peak = {
            "fp16": self.fp16_tensor_tflops,
            "int8": self.int8_tensor_tops,
            "fp8": self.fp8_tensor_tflops,
            "fp4": self.fp4_tensor_tflops,
        }[compute]
        return peak or self.fp16_tensor_tflops


def _parse(path: Path) -> Target:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EdgekitError(f"{path}: invalid TOML ({e})") from None
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise EdgekitError(f"{path}: missing {', '.join(missing)}")
    return Target(
        name=raw["name"],
        description=raw["description"],
        gpu_arch=raw["gpu_arch"],
        family=raw.get("family", ""),
        memory_gb=float(raw["memory_gb"]),
        memory_bandwidth_gbs=float(raw["memory_bandwidth_gbs"]),
        fp16_tensor_tflops=float(raw["fp16_tensor_tflops"]),
        int8_tensor_tops=float(raw.get("int8_tensor_tops", 0.0)),
        fp8_tensor_tflops=float(raw.get("fp8_tensor_tflops", 0.0)),
        fp4_tensor_tflops=float(raw.get("fp4_tensor_tflops", 0.0)),
        reserved_gb=float(raw["reserved_gb"]),
        precisions=tuple(raw["precisions"]),
        backends=tuple(raw["backends"]),
        camera_resolution=tuple(int(x) for x in raw["camera_resolution"]),
        max_visual_tokens=int(raw["max_visual_tokens"]),
        aliases=tuple(raw.get("aliases", ())),
        sources=dict(raw.get("sources", {})),
    )


def all_targets(directory: Path = TARGETS_DIR) -> dict[str, Target]:
    if not directory.is_dir():
        raise EdgekitError(f"{directory}: target recipes not found")
    targets = [_parse(p) for p in sorted(directory.glob("*.toml"))]
    return {t.name: t for t in targets}


def get_target(name: str, directory: Path = TARGETS_DIR) -> Target:
    targets = all_targets(directory)
    for t in targets.values():
        if name == t.name or name in t.aliases:
            return t
    raise EdgekitError(f"unknown target '{name}'; choose one of: {', '.join(sorted(targets))} (see `edgekit targets`)")
