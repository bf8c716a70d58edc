"""Open an image file safely: a clear error naming the file, EXIF orientation applied, RGB out.

Every mode Pillow reads becomes 8-bit RGB the way the C++ host's decoder (libpng, libjpeg) gives it, so both see the
same pixels: 16-bit samples keep their high byte (Pillow's own convert("RGB") would clip a 16-bit depth or IR frame to
white), 32-bit integer grayscale is read as 16-bit samples (clipped to 0..65535, high byte), float grayscale as 0..1,
alpha and palette transparency are dropped (as transformers' load_image does), CMYK converts as Pillow does.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError


MAX_IMAGE_FILE_BYTES = 256 << 20  # the C++ host's limit too


def to_8bit_rgb(im):
    """A decoded PIL image of any mode -> RGB, 16- and 32-bit samples scaled, not clipped (module docstring)."""
    import numpy as np
    from PIL import Image

    if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N, I (32-bit): sample >> 8, as libpng's strip_16
        gray = (np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
    elif im.mode == "F":
        gray = np.round(np.clip(np.nan_to_num(np.asarray(im, dtype=np.float64)), 0.0, 1.0) * 255).astype(np.uint8)
    else:
        return im.convert("RGB")
    return Image.fromarray(np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2)), mode="RGB")


def load_image(path: str | Path):
    """Return a fully decoded RGB PIL image, or raise EdgekitError naming the file."""
    from edgekit.safe_files import read_regular

    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path}: image file not found")
    data = read_regular(path, max_bytes=MAX_IMAGE_FILE_BYTES)  # a FIFO or a directory is refused unread
    return decode_image(data, str(path))


def decode_image(data: bytes, where: str, *, max_pixels: int | None = None):
    """Encoded image bytes -> a fully decoded RGB PIL image; EdgekitError naming `where` otherwise. `max_pixels`:
    refuse larger images from their header, before decoding a byte of pixels (a server's inputs)."""
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if max_pixels is not None and im.width * im.height > max_pixels:
                raise EdgekitError(f"{where}: {im.width}x{im.height} image is over the limit of {max_pixels} pixels")
            im.load()  # decode now, so truncated files fail here and not deep inside a model
            im = ImageOps.exif_transpose(im)
            return to_8bit_rgb(im)
    except UnidentifiedImageError:
        raise EdgekitError(f"{where}: not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:  # Pillow's guard against a tiny file that decodes to gigabytes
        raise EdgekitError(f"{where}: image too large to decode safely ({e}); resize it first") from None
    except MemoryError:
        raise EdgekitError(f"{where}: image too large to decode in the memory available; resize it first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise EdgekitError(f"{where}: unreadable image ({e})") from None
