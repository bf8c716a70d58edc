"""Open an image file safely: a clear error naming the file, EXIF orientation applied, RGB out."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError


def load_image(path: str | Path):
    """Return a fully decoded RGB PIL image, or raise EdgekitError naming the file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated files fail here and not deep inside a model
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise EdgekitError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as e:  # Pillow's guard against a tiny file that decodes to gigabytes
        raise EdgekitError(f"{path}: image too large to decode safely ({e}); resize it first") from None
    except MemoryError:
        raise EdgekitError(f"{path}: image too large to decode in the memory available; resize it first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise EdgekitError(f"{path}: unreadable image ({e})") from None
