"""Postprocessing, compositing and encoding options, and the WebUI presets."""

from dataclasses import dataclass, replace

from matting_core.compose import parse_color

FORMATS = ("png", "jpg", "webp")
# The integer options' inclusive ranges: Options checks them, and the web API's schema (web/schemas.py)
# states the same numbers to clients, so the document and the check cannot disagree.
RANGES: dict[str, tuple[int, int]] = {"alpha_threshold": (0, 255), "erode_kernel": (0, 50),
                                      "feather_radius": (0, 50), "quality": (1, 100)}


@dataclass(frozen=True)
class Options:
    format: str = "png"  # png | jpg | webp
    bg_color: str | None = None  # "#rrggbb", "#rrggbbaa" or a CSS colour name
    # Every step is off by default: the model's own alpha must not be made worse (README,
    # "Matting quality"). On bench/matting_quality.py refine improved every measure, but that
    # set also flatters the old refine, which made real held-out photos worse; threshold 10
    # lowered SAD but raised MSE and gradient error; erode and feather improved no measure.
    alpha_threshold: int = 0  # 0-255: alpha below it becomes 0; 0 turns it off
    erode_kernel: int = 0  # px; 0 turns erosion off
    feather_edge: bool = False
    feather_radius: int = 2  # px, when feather_edge is on
    refine: bool = False  # guided-filter edge refinement at full resolution
    despill: bool = False  # remove background colour from the edge
    mask: bool = False  # write the alpha alone as a grey PNG
    quality: int | None = None  # jpg/webp quality; None = jpg 92, webp lossless
    crop: bool = False  # cut the output down to the subject's bounding box

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ValueError(f"{name} {value} must be within {low}-{high}")
        if self.bg_color is not None:
            rgba = parse_color(self.bg_color)  # raises ValueError naming the accepted forms
            if self.format == "jpg" and rgba[3] < 255 and not self.mask:
                raise ValueError(f"bg_color {self.bg_color!r} is translucent but jpg has no "
                                 "transparency; use an opaque colour, or png/webp")

    @property
    def extension(self) -> str:
        return "png" if self.mask else self.format


# The original WebUI's presets; explicit options given with a preset win.
PRESETS: dict[str, dict] = {
    "id-photo": {"alpha_threshold": 15, "erode_kernel": 2, "format": "jpg", "bg_color": "#ffffff"},
    "ecommerce": {"refine": True, "feather_edge": True, "format": "png"},
    "avatar": {"alpha_threshold": 8, "erode_kernel": 1},
}

# Every postprocessing step off, so the model's own alpha can be checked.
RAW = {"alpha_threshold": 0, "erode_kernel": 0, "feather_edge": False, "refine": False}


def resolve_options(preset: str | None = None, raw: bool = False, **overrides) -> Options:
    """Options from a preset, then `raw`, then explicit overrides (None means unset)."""
    values: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if raw:
        values.update(RAW)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(Options(), **values)
