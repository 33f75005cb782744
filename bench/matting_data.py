"""A matting test set with a known alpha, made from parts we may redistribute: generated
foregrounds (shapes, soft edges, hair-like strands, holes), textured with the bundled photos,
composited onto the bundled photos as backgrounds. Deterministic: one seed per sample.

Each sample is I = a*F + (1-a)*B plus a little grain, encoded as a JPEG (quality 95, as a
camera would deliver it) so the service sees it exactly as it sees a photo; the truth is a.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data"
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket")
CATEGORIES = ("hard", "soft", "strands", "holes")
SIZE = (1280, 960)  # width, height: a typical phone photo scaled for the web
SUPER = 4  # supersampling for anti-aliased edges and sub-pixel strands


@dataclass(frozen=True)
class Sample:
    name: str
    category: str
    background: str
    jpeg: bytes
    truth: np.ndarray  # float32 HxW alpha in [0, 1]


def _photo(name: str, rng: np.random.Generator, zoom: tuple[float, float]) -> np.ndarray:
    """A random window of the photo, `zoom` (a range) of its size, scaled to SIZE."""
    im = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
    scale = rng.uniform(*zoom)
    cw, ch = max(16, round(im.width * scale)), max(16, round(im.width * scale * SIZE[1] / SIZE[0]))
    ch = min(ch, im.height)
    x, y = rng.integers(0, im.width - cw + 1), rng.integers(0, im.height - ch + 1)
    return np.asarray(im.resize(SIZE, Image.BICUBIC, box=(x, y, x + cw, y + ch)), np.float32)


def _backdrop(name: str, rng: np.random.Generator) -> np.ndarray:
    """Part of a photo, zoomed in, a little out of focus and lower in contrast, as a
    portrait's or a product shot's background is: so the photo's own subject does not
    compete with the generated one, while its texture still reaches the subject's edge."""
    photo = cv2.GaussianBlur(_photo(name, rng, (0.3, 0.5)), (0, 0), rng.uniform(1.5, 4.0))
    mean = photo.mean((0, 1))
    return mean + rng.uniform(0.5, 0.8) * (photo - mean)


def _blob(rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float], float]:
    """A smooth star-shaped outline around the centre, as (N,2) points at SUPER scale, with
    its centre and mean radius at full scale. Radius ~30% of the short side: a main subject."""
    w, h = SIZE
    centre = (w / 2 + rng.uniform(-0.06, 0.06) * w, h / 2 + rng.uniform(-0.04, 0.08) * h)
    radius = rng.uniform(0.28, 0.36) * h
    theta = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0, 0.16 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    stretch = rng.uniform(0.8, 1.25)  # wider or taller than round
    pts = np.stack([centre[0] + radius * r * np.cos(theta) * stretch,
                    centre[1] + radius * r * np.sin(theta) / stretch], axis=1)
    return pts * SUPER, centre, radius


def _render(draw) -> np.ndarray:
    """Run draw(canvas) on a SUPER-scale uint8 canvas; the area average is the alpha."""
    w, h = SIZE
    canvas = np.zeros((h * SUPER, w * SUPER), np.uint8)
    draw(canvas)
    return cv2.resize(canvas, SIZE, interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _holes(canvas: np.ndarray, centre, radius, rng: np.random.Generator) -> None:
    """Three to six round or oval holes, well inside the outline, 12-22% of its radius."""
    for _ in range(rng.integers(3, 7)):
        d, phi = rng.uniform(0.2, 0.55) * radius, rng.uniform(0, 2 * np.pi)
        c = (centre[0] + d * np.cos(phi), centre[1] + d * np.sin(phi))
        axes = radius * rng.uniform(0.12, 0.22) * np.array([1, rng.uniform(0.5, 1)])
        cv2.ellipse(canvas, tuple(np.round(np.array(c) * SUPER).astype(int)),
                    tuple(np.round(axes * SUPER).astype(int)), rng.uniform(0, 180), 0, 360, 0, -1)


def _strand(top: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One hair as (N,2) points at full scale: rooted 8 px inside a point of `top`, heading
    away from its middle, 40-220 px long with a gentle bend."""
    root = top[rng.integers(len(top))]
    heading = np.arctan2(*(root - top.mean(0))[::-1]) + rng.normal(0, 0.5)
    bend, length = rng.normal(0, 0.012), rng.uniform(40, 220)
    angle = heading + bend * np.arange(0, length, 4.0)
    steps = np.stack([np.cos(angle), np.sin(angle)], 1) * 4.0
    return root - 8 * steps[0] / 4.0 + np.cumsum(steps, 0)


def _strands(pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hair: 240-400 strands leaving the upper part of the outline, 0.5-2.5 px wide. Their
    opacities come in four levels, each drawn on its own layer; the layers combine as
    1 - prod(1 - a), as overlapping translucent strands do."""
    top = pts[pts[:, 1] < np.percentile(pts[:, 1], 55)] / SUPER
    layers = []
    for opacity in (0.45, 0.65, 0.85, 1.0):
        def draw(canvas, opacity=opacity):
            for _ in range(rng.integers(60, 100)):
                path = np.round(_strand(top, rng) * SUPER).astype(np.int32)
                width = max(1, round(rng.uniform(0.5, 2.5) * SUPER))
                cv2.polylines(canvas, [path], False, round(255 * opacity), width, cv2.LINE_AA)
        layers.append(_render(draw))
    return 1 - np.prod([1 - a for a in layers], axis=0)


def _alpha(category: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """The truth, the object's body without strands or blur (for its shading), its radius."""
    pts, centre, radius = _blob(rng)

    def draw(canvas):
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 255)
        if category == "holes":
            _holes(canvas, centre, radius, rng)

    alpha = solid = _render(draw)
    if category == "soft":  # defocus or motion: the edge a few px wide
        alpha = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(2.0, 6.0))
    if category == "strands":
        alpha = 1 - (1 - alpha) * (1 - _strands(pts, rng))
    return alpha, solid, radius


def _shade(solid: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Light on a rounded object: a height map that rises over the outer 30% of the radius
    (from the distance to the edge, holes included), lit from one side, with a highlight."""
    depth = 0.3 * radius
    d = cv2.distanceTransform((solid > 0.5).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    height = np.sqrt(1 - (1 - np.minimum(d / depth, 1)) ** 2) * depth
    height = cv2.GaussianBlur(height, (0, 0), 2.0)  # else the pixel grid shows in the normals
    nx, ny = -cv2.Sobel(height, -1, 1, 0) / 8, -cv2.Sobel(height, -1, 0, 1) / 8
    norm = np.sqrt(nx**2 + ny**2 + 1)
    phi = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(phi), np.sin(phi), 1.2]) / np.hypot(1, 1.2)
    lambert = np.maximum(0, (nx * light[0] + ny * light[1] + light[2]) / norm)
    halfway = (light + (0, 0, 1)) / np.linalg.norm(light + (0, 0, 1))
    spec = np.maximum(0, (nx * halfway[0] + ny * halfway[1] + halfway[2]) / norm) ** 30
    return (0.3 + 0.8 * lambert + 0.35 * spec).astype(np.float32)


def _foreground(texture: str, solid: np.ndarray, radius: float, backdrop: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """An object's colours: part of another photo as its surface texture, tinted towards one
    colour, shaded as a rounded object under one light. The colour leans up to 60% towards
    the backdrop's, since real subjects do not always stand out from their background."""
    tex = _photo(texture, rng, (0.5, 0.9))
    grey = tex.mean(2, keepdims=True)
    camouflage = rng.uniform(0, 0.6)
    colour = (1 - camouflage) * rng.uniform(40, 230, 3) + camouflage * backdrop.mean((0, 1))
    surface = 0.5 * tex + 0.5 * colour.astype(np.float32) * grey / max(float(grey.mean()), 1.0)
    return np.clip(surface * _shade(solid, radius, rng)[..., None], 0, 255)


def make_sample(index: int) -> Sample:
    """Sample `index`: its background, category and seed all follow from it."""
    background = BACKGROUNDS[index % len(BACKGROUNDS)]
    category = CATEGORIES[(index // len(BACKGROUNDS)) % len(CATEGORIES)]
    rng = np.random.default_rng(1000 + index)
    # The texture comes from another photo than the backdrop (1 or 2 along), so they differ.
    texture = BACKGROUNDS[(index + 1 + index // 16 % 2) % len(BACKGROUNDS)]
    alpha, solid, radius = _alpha(category, rng)
    backdrop = _backdrop(background, rng)
    fg = _foreground(texture, solid, radius, backdrop, rng)
    a = alpha[..., None]
    noise = rng.normal(0, 2.0, fg.shape)  # a camera's grain, about 2 grey levels
    image = np.clip(a * fg + (1 - a) * backdrop + noise + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95)
    return Sample(f"{index:02d}-{category}-{background}", category, background, buf.getvalue(), alpha)


def dataset(count: int = 32) -> list[Sample]:
    return [make_sample(i) for i in range(count)]
