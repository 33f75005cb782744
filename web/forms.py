"""Options from form fields (or a JSON body), with errors that name the field and what it accepts."""

from dataclasses import fields, replace

from matting_core.options import Options, resolve_options
from matting_core.registry import model_choices, model_names
from web.errors import ApiError

_TRUE, _FALSE = {"true", "1", "on", "yes"}, {"false", "0", "off", "no"}
_BOOLS = {f.name for f in fields(Options) if f.type in (bool, "bool")}
_INTS = {"alpha_threshold", "erode_kernel", "feather_radius", "quality"}
FIELDS = ("format", "bg_color", "alpha_threshold", "erode_kernel", "feather_edge", "feather_radius",
          "refine", "despill", "mask", "quality", "crop")


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ApiError(400, "invalid_option", f"{name}={value!r} must be true or false")


def _int(name: str, value) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ApiError(400, "invalid_option", f"{name}={value!r} must be a whole number") from None


def parse(values, base: dict | None = None) -> Options:
    """`values`: a form or dict. Unknown fields are ignored; empty ones count as unset."""
    given = {k: values.get(k) for k in FIELDS if values.get(k) not in (None, "")}
    parsed = dict(base or {})
    for name, value in given.items():
        if name in _BOOLS:
            parsed[name] = _bool(name, value)
        elif name in _INTS:
            parsed[name] = _int(name, value)
        else:
            parsed[name] = str(value).strip().lower() if name == "format" else str(value).strip()
    if parsed.get("format") == "jpeg":
        parsed["format"] = "jpg"
    # "transparent" (or "none") must beat a preset's colour, and None would mean "unset".
    transparent = str(parsed.get("bg_color", "")).lower() in ("transparent", "none")
    if transparent:
        del parsed["bg_color"]
    try:
        options = resolve_options(values.get("preset") or None, **parsed)
        return replace(options, bg_color=None) if transparent else options
    except (ValueError, TypeError) as err:
        raise ApiError(400, "invalid_option", str(err)) from None


def model(values, default: str) -> str:
    """The `model` field (a registry name), or `default` when it is missing or empty. Not an
    option of Options: a preset never changes it, and a recompose cannot (it reuses the alpha maps)."""
    name = str(values.get("model") or default).strip().lower()
    if name not in model_names():
        raise ApiError(400, "invalid_option", f"model={name!r} is not offered; choose one of {model_choices()}")
    return name
