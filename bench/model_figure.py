"""docs/models.webp: the bundled test photos cut out by each model, side by side.

`python -m bench.model_figure` (also `make figure`) rewrites it on purpose; tests never do.
Each cutout is the default pipeline's (default options, bf16 where the CPU has AMX or AVX512-BF16), shown
on a checkerboard so that what stayed and what went are both visible.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from matting_core import pipeline, preprocess
from matting_core.model import get_model
from matting_core.options import Options
from matting_core.registry import get_spec, model_names

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image samples, tests/data/SOURCES.md
THUMB_H, LABEL_H, GAP = 200, 28, 6


def checkerboard(size: tuple[int, int], square: int = 10) -> Image.Image:
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    light = ((xs // square + ys // square) % 2).astype(bool)
    return Image.fromarray(np.where(light[..., None], 230, 200).astype(np.uint8).repeat(3, axis=2))


def cutout(model, name: str) -> Image.Image:
    data = (ROOT / "tests" / "data" / f"{name}.jpg").read_bytes()
    alpha = model.predict(preprocess.to_batch([pipeline.prepare(data, name, model.spec)]))[0]
    import io

    rgba = Image.open(io.BytesIO(pipeline.finish(data, name, alpha, Options()))).convert("RGBA")
    board = checkerboard(rgba.size).convert("RGBA")
    return Image.alpha_composite(board, rgba).convert("RGB")


def thumb(image: Image.Image) -> Image.Image:
    return image.resize((round(image.width * THUMB_H / image.height), THUMB_H), Image.LANCZOS)


def main() -> None:
    names = model_names()
    models = [get_model(n, device="cpu").load() for n in names]
    rows = []
    for photo in PHOTOS:
        original = Image.open(ROOT / "tests" / "data" / f"{photo}.jpg").convert("RGB")
        rows.append([thumb(original)] + [thumb(cutout(m, photo)) for m in models])
    labels = ["photo"] + [f"{n} ({get_spec(n).hint})" for n in names]
    widths = [max(row[c].width for row in rows) for c in range(len(labels))]
    sheet = Image.new("RGB", (sum(widths) + GAP * (len(widths) + 1),
                              LABEL_H + len(rows) * (THUMB_H + GAP) + GAP), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=18)
    x = GAP
    for c, label in enumerate(labels):
        draw.text((x, 4), label, fill="black", font=font)
        for r, row in enumerate(rows):
            sheet.paste(row[c], (x, LABEL_H + r * (THUMB_H + GAP)))
        x += widths[c] + GAP
    out = ROOT / "docs" / "models.webp"
    sheet.save(out, "WEBP", quality=82, method=6)
    print(out)


if __name__ == "__main__":
    main()
