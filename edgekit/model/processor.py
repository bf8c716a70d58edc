"""Qwen2-VL image preprocessing with numpy and Pillow only (edge hosts carry no transformers).

The steps and their numerics follow transformers' Pillow path (`Qwen2VLImageProcessorPil`, the
class `AutoImageProcessor` picks on a host without torchvision), so the output is bit-for-bit
the same:

1. convert to RGB, compositing any transparency onto white;
2. resize with Pillow (bicubic by default) to `smart_resize`'s size, or to a fixed `resize_to`;
3. rescale: uint8 -> float64 * rescale_factor -> float32;
4. normalise in float32: (x - mean) / std per channel;
5. patchify to [grid_h * grid_w, C * T * P * P], rows ordered by merge window so that each run
   of merge*merge consecutive rows is one token of the language model.

Fixed-resolution mode (`resize_to=(h, w)`) skips smart_resize so that a vision engine built for
static shapes always sees the same grid; h and w must be multiples of patch_size * merge_size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgekit.errors import EdgekitError

PREPROCESSOR_FILE = "preprocessor_config.json"

# Defaults of Qwen2VLImageProcessor, used for keys a preprocessor_config.json leaves out.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class ImageProcessorConfig:
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = int(Image.Resampling.BICUBIC)
    do_resize: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    do_convert_rgb: bool = True

    @property
    def factor(self) -> int:
        """Side lengths must be multiples of this so the patch grid splits into merge windows."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        return len(self.image_mean) * self.temporal_patch_size * self.patch_size**2

    def as_dict(self) -> dict:
        d = asdict(self)
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        return d


def processor_config_from_dict(raw: dict, where: str = PREPROCESSOR_FILE) -> ImageProcessorConfig:
    """Read the fields transformers reads; top-level min/max_pixels override "size" as in HF."""
    size = raw.get("size") or {}
    if not isinstance(size, dict):
        raise EdgekitError(f"{where}: field 'size' must be an object with shortest_edge/longest_edge, got {size!r}")
    base = ImageProcessorConfig()
    min_pixels = raw.get("min_pixels", size.get("shortest_edge", size.get("min_pixels", base.min_pixels)))
    max_pixels = raw.get("max_pixels", size.get("longest_edge", size.get("max_pixels", base.max_pixels)))

    def positive_int(name: str, value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value <= 0:
            raise EdgekitError(f"{where}: field '{name}' must be a positive integer, got {value!r}")
        return int(value)

    def floats(name: str, value) -> tuple[float, ...]:
        if isinstance(value, (int, float)):
            value = [value] * 3
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise EdgekitError(
                f"{where}: field '{name}' must be a list of 3 numbers (one per RGB channel), got {value!r}"
            )
        return tuple(float(v) for v in value)

    cfg = ImageProcessorConfig(
        patch_size=positive_int("patch_size", raw.get("patch_size", base.patch_size)),
        temporal_patch_size=positive_int(
            "temporal_patch_size", raw.get("temporal_patch_size", base.temporal_patch_size)
        ),
        merge_size=positive_int("merge_size", raw.get("merge_size", base.merge_size)),
        min_pixels=positive_int("min_pixels (size.shortest_edge)", min_pixels),
        max_pixels=positive_int("max_pixels (size.longest_edge)", max_pixels),
        image_mean=floats("image_mean", raw.get("image_mean", base.image_mean)),
        image_std=floats("image_std", raw.get("image_std", base.image_std)),
        rescale_factor=float(raw.get("rescale_factor", base.rescale_factor)),
        resample=int(raw.get("resample", base.resample)),
        do_resize=bool(raw.get("do_resize", True)),
        do_rescale=bool(raw.get("do_rescale", True)),
        do_normalize=bool(raw.get("do_normalize", True)),
        do_convert_rgb=bool(raw.get("do_convert_rgb", True)),
    )
    if cfg.min_pixels > cfg.max_pixels:
        raise EdgekitError(
            f"{where}: min_pixels {cfg.min_pixels} exceeds max_pixels {cfg.max_pixels}; swap or fix them"
        )
    if any(s == 0 for s in cfg.image_std):
        raise EdgekitError(f"{where}: field 'image_std' must not contain 0, got {list(cfg.image_std)}")
    return cfg


def load_processor_config(checkpoint_dir: str | Path) -> ImageProcessorConfig:
    from edgekit.json_files import read_json_object

    path = Path(checkpoint_dir) / PREPROCESSOR_FILE
    if not path.is_file():
        raise EdgekitError(
            f"{path}: not found; a Qwen2.5-VL checkpoint ships preprocessor_config.json beside config.json"
        )
    return processor_config_from_dict(read_json_object(path), where=str(path))


def check_image_size(width: int, height: int) -> None:
    """Qwen2.5-VL's processor refuses aspect ratios above 200 (transformers raises a bare ValueError): say it first."""
    if min(height, width) <= 0:
        raise EdgekitError(f"image size {width}x{height}: both sides must be positive")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise EdgekitError(
            f"image size {width}x{height}: aspect ratio above {MAX_ASPECT_RATIO} is not supported; crop the image"
        )


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Size closest to (height, width) with both sides multiples of `factor` and area in [min, max].

    Same arithmetic as HF (Python's round-half-even, then floor when too big, ceil when too small),
    because a one-factor difference changes the token count.
    """
    check_image_size(width, height)
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def to_rgb_pil(image: Image.Image) -> Image.Image:
    """RGB image; transparent pixels are composited onto white (as HF does), not dropped."""
    from edgekit.data.images import to_8bit_rgb

    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if not has_alpha:
        return to_8bit_rgb(image)  # 16-bit samples scaled, not clipped to white
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def rgb_array_to_pil(array: np.ndarray) -> Image.Image:
    """uint8 [H, W] / [H, W, 1|3|4] array -> RGB image, alpha blended onto white in float64 like HF."""
    if array.dtype != np.uint8:
        raise EdgekitError(f"image array has dtype {array.dtype}; pass uint8 pixels (0..255) in [H, W, C] layout")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise EdgekitError(f"image array has shape {array.shape}; expected [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        alpha = array[:, :, 3:4] / 255.0  # [H, W, 1] float64
        blended = alpha * array[:, :, :3] + (1 - alpha) * 255.0  # [H, W, 3]
        array = np.round(blended).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def normalise(pixels: np.ndarray, cfg: ImageProcessorConfig) -> np.ndarray:
    """uint8 [C, H, W] -> float32 [C, H, W]; rescale in float64 then normalise in float32, as HF."""
    x = pixels.astype(np.float32)
    if cfg.do_rescale:
        x = (pixels.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    if cfg.do_normalize:
        mean = np.asarray(cfg.image_mean, dtype=np.float32)[:, None, None]  # [C, 1, 1]
        std = np.asarray(cfg.image_std, dtype=np.float32)[:, None, None]
        x = (x - mean) / std
    return x


def patchify(image: np.ndarray, patch: int, merge: int, temporal: int) -> tuple[np.ndarray, int, int]:
    """float32 [C, H, W] -> ([gh*gw, C*T*P*P], gh, gw), rows grouped by merge x merge window.

    A still image fills all T temporal slots with the same frame (the patch embedding is a 3-D conv).
    """
    c, height, width = image.shape
    gh, gw = height // patch, width // patch
    x = image.reshape(c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # [gh/m, gw/m, m, m, C, P, P]
    x = np.broadcast_to(x[:, :, :, :, :, None], x.shape[:5] + (temporal,) + x.shape[5:])  # [.., C, T, P, P]
    return np.ascontiguousarray(x.reshape(gh * gw, c * temporal * patch * patch)), gh, gw


def target_size(
    height: int, width: int, cfg: ImageProcessorConfig, resize_to: tuple[int, int] | None = None
) -> tuple[int, int]:
    """(h, w) an image of this size is resized to: resize_to if given, else smart_resize."""
    if resize_to is not None:
        h, w = (int(v) for v in resize_to)
        if h <= 0 or w <= 0 or h % cfg.factor or w % cfg.factor:
            raise EdgekitError(
                f"resize_to={resize_to}: height and width must be positive multiples of "
                f"patch_size*merge_size = {cfg.factor}"
            )
        return h, w
    if not cfg.do_resize:
        return height, width
    return smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels)


def model_pixels(
    image: Image.Image | np.ndarray, cfg: ImageProcessorConfig, *, resize_to: tuple[int, int] | None = None
) -> np.ndarray:
    """One image converted and resized as the model takes it: uint8 [3, H, W], H and W multiples of the patch factor
    (what its patches and grid follow from: `patches_of`)."""
    if isinstance(image, np.ndarray):
        pil = rgb_array_to_pil(image)
    elif isinstance(image, Image.Image):
        pil = to_rgb_pil(image) if cfg.do_convert_rgb else image
    else:
        raise EdgekitError(f"unsupported image type {type(image).__name__}; pass a PIL image or a uint8 numpy array")
    if pil.mode != "RGB":
        raise EdgekitError(f"image mode {pil.mode!r} is not RGB; enable do_convert_rgb in {PREPROCESSOR_FILE}")

    h, w = target_size(pil.height, pil.width, cfg, resize_to)
    if h % cfg.factor or w % cfg.factor:
        raise EdgekitError(
            f"image size {pil.width}x{pil.height} with do_resize=false is not a multiple of {cfg.factor}; "
            "enable do_resize or pass resize_to"
        )
    if (h, w) != (pil.height, pil.width):  # Pillow returns a plain copy for a same-size resize anyway
        pil = pil.resize((w, h), resample=cfg.resample)
    return np.asarray(pil).transpose(2, 0, 1)  # [3, H, W] uint8


def grid_of(pixels: np.ndarray, cfg: ImageProcessorConfig) -> tuple[int, int, int]:
    """grid_thw (1, gh, gw) of `model_pixels` [3, H, W]."""
    return 1, pixels.shape[1] // cfg.patch_size, pixels.shape[2] // cfg.patch_size


def patches_of(pixels: np.ndarray, cfg: ImageProcessorConfig) -> np.ndarray:
    """`model_pixels` [3, H, W] -> patches float32 [gh * gw, C*T*P*P]."""
    return patchify(normalise(pixels, cfg), cfg.patch_size, cfg.merge_size, cfg.temporal_patch_size)[0]


def preprocess_image(
    image: Image.Image | np.ndarray, cfg: ImageProcessorConfig, *, resize_to: tuple[int, int] | None = None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """One image -> (patches float32 [N, C*T*P*P], grid_thw (1, gh, gw)); N = gh * gw."""
    pixels = model_pixels(image, cfg, resize_to=resize_to)
    return patches_of(pixels, cfg), grid_of(pixels, cfg)


def preprocess_images(
    images: list, cfg: ImageProcessorConfig, resize_to: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Several images -> (patches concatenated [sum N_i, C*T*P*P], grid_thw int64 [k, 3])."""
    if not images:
        raise EdgekitError("preprocess_images: no images given")
    outs = [preprocess_image(im, cfg, resize_to=resize_to) for im in images]
    patches = np.concatenate([p for p, _ in outs], axis=0)
    grid_thw = np.asarray([g for _, g in outs], dtype=np.int64)  # [k, 3]
    return patches, grid_thw


def image_token_counts(grid_thw: np.ndarray, merge_size: int) -> list[int]:
    """Language-model tokens per image: t*h*w / merge^2 (one token per merge window)."""
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    return [int(n) for n in grid.prod(axis=1) // (merge_size * merge_size)]
