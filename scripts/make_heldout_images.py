"""Draw the held-out evaluation images in edgekit/data/heldout/ (run once; the PNGs are committed as data).

A renderer of its own, unlike edgekit.data.scene (flat-colour road and table scenes at 448x252): night, rain,
overhead, tunnel, tabletop, shelf, drawer and floor views with gradients, noise and blur, at odd sizes, so
that the held-out set shares no image and no look with any calibration source.

    python scripts/make_heldout_images.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "edgekit" / "data" / "heldout"


def gradient(w: int, h: int, top, bottom) -> Image.Image:
    t = np.linspace(0, 1, h)[:, None, None]
    rows = (1 - t) * np.array(top, float) + t * np.array(bottom, float)  # [h, 1, 3]
    return Image.fromarray(np.broadcast_to(rows, (h, w, 3)).astype(np.uint8))


def noisy(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    a = np.asarray(img, float) + rng.normal(0, sigma, (img.height, img.width, 3))
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def night_road(rng):
    im = gradient(333, 187, (5, 8, 25), (30, 30, 40))
    d = ImageDraw.Draw(im)
    d.polygon([(0, 187), (140, 95), (193, 95), (333, 187)], fill=(45, 45, 50))
    for y in range(100, 187, 18):
        d.line([(166, y), (166, y + 8)], fill=(200, 180, 60), width=2)
    for x in (120, 210):
        d.ellipse([x - 4, 112, x + 4, 118], fill=(255, 30, 30))
        d.ellipse([x + 14, 112, x + 22, 118], fill=(255, 30, 30))
    for x in (40, 290):
        d.ellipse([x - 12, 20, x + 12, 44], fill=(255, 220, 150))
    return noisy(im.filter(ImageFilter.GaussianBlur(1.2)), rng, 6)


def rain_junction(rng):
    im = gradient(301, 229, (150, 155, 160), (90, 95, 100))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 140, 301, 229], fill=(70, 72, 78))
    for x in range(40, 260, 24):
        d.rectangle([x, 170, x + 12, 200], fill=(220, 220, 225))
    d.rectangle([230, 110, 240, 165], fill=(30, 60, 140))
    d.ellipse([228, 98, 242, 112], fill=(230, 190, 160))
    for _ in range(160):
        x, y = rng.integers(0, 301), rng.integers(0, 229)
        d.line([(x, y), (x - 3, y + 12)], fill=(200, 205, 215), width=1)
    return noisy(im.filter(ImageFilter.GaussianBlur(0.8)), rng, 4)


def car_park(rng):
    im = Image.new("RGB", (274, 274), (105, 108, 104))
    d = ImageDraw.Draw(im)
    for row, y in enumerate((30, 170)):
        for i in range(6):
            x = 12 + 42 * i
            d.rectangle([x, y, x + 36, y + 70], outline=(240, 240, 240), width=2)
            if not (row == 1 and i == 4):
                d.rounded_rectangle(
                    [x + 6, y + 8, x + 30, y + 62], 6, fill=tuple(int(c) for c in rng.integers(30, 230, 3))
                )
    d.rectangle([254, 120, 274, 150], fill=(40, 160, 60))
    return noisy(im, rng, 5)


def tunnel_exit(rng):
    im = Image.new("RGB", (245, 203), (20, 18, 16))
    d = ImageDraw.Draw(im)
    d.ellipse([80, 50, 170, 150], fill=(250, 250, 240))
    for k in range(8):
        d.rectangle([10 + 14 * k, 20 + 8 * k, 18 + 14 * k, 24 + 8 * k], fill=(255, 170, 60))
    return noisy(im.filter(ImageFilter.GaussianBlur(3)), rng, 3)


def breakfast_table(rng):
    wood = gradient(262, 262, (150, 100, 60), (120, 80, 45))
    a = np.asarray(wood, float) + 12 * np.sin(np.arange(262) / 3.0)[None, :, None]
    im = Image.fromarray(a.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    d.ellipse([90, 90, 170, 170], fill=(245, 245, 240), outline=(200, 200, 200), width=3)
    d.ellipse([215, 40, 250, 75], fill=(180, 40, 40))
    d.ellipse([224, 49, 241, 66], fill=(60, 30, 15))
    d.rectangle([30, 180, 60, 240], fill=(230, 200, 120))
    return noisy(im, rng, 3)


def warehouse_shelf(rng):
    im = Image.new("RGB", (217, 301), (60, 62, 70))
    d = ImageDraw.Draw(im)
    for y in (95, 195, 290):
        d.rectangle([0, y, 217, y + 8], fill=(230, 120, 20))
    for y0 in (15, 115, 215):
        x = 8
        while x < 190:
            w = int(rng.integers(30, 60))
            h = int(rng.integers(45, 78))
            d.rectangle([x, y0 + 78 - h, x + w, y0 + 78], fill=(190, 150, 100), outline=(120, 90, 50))
            x += w + int(rng.integers(4, 14))
    return noisy(im, rng, 4)


def tool_drawer(rng):
    im = Image.new("RGB", (309, 197), (35, 35, 40))
    d = ImageDraw.Draw(im)
    d.line([(90, 150), (200, 50)], fill=(190, 190, 200), width=10)
    d.ellipse([190, 35, 220, 65], outline=(190, 190, 200), width=8)
    d.rectangle([20, 20, 70, 40], fill=(200, 30, 30))
    d.rectangle([70, 27, 120, 33], fill=(170, 170, 170))
    d.rectangle([240, 120, 290, 180], fill=(30, 90, 200))
    return noisy(im, rng, 5)


def laundry_floor(rng):
    im = gradient(286, 215, (200, 190, 170), (170, 160, 140))
    d = ImageDraw.Draw(im)
    d.rectangle([230, 20, 286, 215], fill=(110, 70, 40))
    for _ in range(5):
        x, y = int(rng.integers(20, 220)), int(rng.integers(60, 190))
        d.chord([x, y, x + 50, y + 30], 0, 360, fill=tuple(int(c) for c in rng.integers(40, 240, 3)))
    d.ellipse([150, 170, 190, 190], fill=(20, 20, 20))
    return noisy(im.filter(ImageFilter.GaussianBlur(0.6)), rng, 4)


DRAW = {
    "night_road": night_road,
    "rain_junction": rain_junction,
    "car_park": car_park,
    "tunnel_exit": tunnel_exit,
    "breakfast_table": breakfast_table,
    "warehouse_shelf": warehouse_shelf,
    "tool_drawer": tool_drawer,
    "laundry_floor": laundry_floor,
}


def main() -> None:
    for i, (name, draw) in enumerate(DRAW.items()):
        draw(np.random.default_rng(1000 + i)).save(OUT / f"{name}.png", optimize=True)
        print(OUT / f"{name}.png")


if __name__ == "__main__":
    main()
