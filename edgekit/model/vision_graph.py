"""The vision ONNX graph's contract, shared by the exporter (edgekit.export) and the runtime (edgekit.runtime).

All precisions: input `patches` float32 [N*gh*gw, patch_dim] exactly as the processor makes it for N
images resized to the planned size; output `embeddings` float32 [N*gh*gw/merge^2, out_hidden] in the
processor's token order. The planned size, grid, image count and precision are stored in the model's
metadata_props (keys `edgekit.*`), so a runtime needs nothing but the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import EdgekitError

INPUT, OUTPUT = "patches", "embeddings"


@dataclass(frozen=True)
class VisionGraphInfo:
    """What a runtime needs to feed the graph (stored in metadata_props)."""

    precision: str
    images: int
    height: int  # pixels every image is resized to
    width: int
    grid_h: int  # patches per image side
    grid_w: int
    merge: int
    patch_dim: int
    out_hidden: int

    @property
    def patches(self) -> int:
        return self.images * self.grid_h * self.grid_w

    @property
    def tokens(self) -> int:
        return self.patches // (self.merge * self.merge)

    def metadata(self) -> dict[str, str]:
        return {f"edgekit.{k}": str(v) for k, v in sorted(self.__dict__.items())}

    @classmethod
    def from_metadata(cls, props: dict[str, str], where: str) -> "VisionGraphInfo":
        try:
            return cls(
                precision=props["edgekit.precision"],
                **{
                    k: int(props[f"edgekit.{k}"])
                    for k in ("images", "height", "width", "grid_h", "grid_w", "merge", "patch_dim", "out_hidden")
                },
            )
        except (KeyError, ValueError) as e:
            raise EdgekitError(
                f"{where}: not an edgekit vision graph (metadata {e} missing or bad); "
                "export it with `edgekit export-vision`"
            ) from None


def set_metadata(model, props: dict[str, str]) -> None:
    import onnx

    del model.metadata_props[:]
    for k, v in sorted(props.items()):
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    model.producer_name, model.producer_version = "edgekit", ""


FP32_BLOCKS_KEY = "edgekit.fp32_blocks"  # an FP16 graph's blocks kept in FP32 (edgekit.export.vision_fp16_guard)


def read_fp32_blocks(path: str | Path) -> list[int]:
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return [int(b) for b in props.get(FP32_BLOCKS_KEY, "").split(",") if b]


def read_info(path: str | Path) -> VisionGraphInfo:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return VisionGraphInfo.from_metadata({p.key: p.value for p in model.metadata_props}, str(path))
