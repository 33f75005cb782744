"""Options from form fields (or a JSON body), with errors that name the field and what it accepts.

The fields, their types, ranges and choices are web/schemas.py's models: the same ones the
OpenAPI document is rendered from.
"""

from dataclasses import replace

from pydantic import BaseModel, ValidationError

from matting_core.options import RANGES, Options, resolve_options
from matting_core.registry import model_choices
from web import schemas
from web.errors import ApiError

FIELDS = tuple(name for name in schemas.OptionFields.NAMES if name != "preset")


def _message(err: dict) -> str:
    name, value = str(err["loc"][0]), err["input"]
    if err["type"] in ("greater_than_equal", "less_than_equal"):
        low, high = RANGES[name]
        return f"{name} {value} must be within {low}-{high}"
    shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "..."
    return f"{name}={shown!r} {err['msg']}"


def once(values, name: str, kind: str = "field"):
    """`name` of a form (or, kind "parameter", a query) sent at most once, else None; 400 when it is sent
    more often (format=png&format=jpg: the client meant one of them, and taking the first silently would
    pick for it). A dict has one of each."""
    count = len(values.getlist(name)) if hasattr(values, "getlist") else 1
    if count > 1:
        raise ApiError(400, f"repeated_{kind}", f"{name} is sent {count} times; send it once")
    return values.get(name)


def validated(model: type[BaseModel], values, names, codes: dict | None = None) -> BaseModel:
    """`model` from the fields `names` that `values` (a form or dict) carries; 400 naming the first bad
    one, with the error code `codes` gives that field (invalid_option by default)."""
    given = {name: once(values, name) for name in names if name in values}
    try:
        return model.model_validate(given)
    except ValidationError as err:
        first = err.errors()[0]
        raise ApiError(400, (codes or {}).get(first["loc"][0], "invalid_option"), _message(first)) from None


def given_options(values) -> dict:
    """The option fields `values` carries, validated (400 naming a bad one); unknown fields are ignored."""
    return validated(schemas.OptionFields, values, schemas.OptionFields.NAMES).model_dump(exclude_unset=True)


def parse(values, base: dict | None = None) -> Options:
    """`values`: a form or dict. Unknown fields are ignored; a field that is sent must be valid."""
    given = given_options(values)
    preset = given.pop("preset", None)
    parsed = dict(base or {}) | given
    if parsed.get("format") == "jpeg":
        parsed["format"] = "jpg"
    # "transparent" (or "none") must beat a preset's colour, and None would mean "unset".
    transparent = str(parsed.get("bg_color", "")) in schemas.COLOR_WORDS
    if transparent:
        del parsed["bg_color"]
    try:
        options = resolve_options(preset, **parsed)
        return replace(options, bg_color=None) if transparent else options
    except (ValueError, TypeError) as err:
        raise ApiError(400, "invalid_option", str(err)) from None


def files_only(form, names) -> None:
    """400 if one of the file fields `names` came as a text field (no filename): it would be dropped unseen."""
    for name in names:
        if name in form:
            raise ApiError(400, "not_a_file", f"{name} must be a file part (with a filename in its "
                                              "Content-Disposition), not a text field")


class _Model(BaseModel):
    model: schemas.ModelName


def model(values, default: str) -> str:
    """The `model` field (a registry name, any case), or `default` when it is not sent. Not an
    option of Options: a preset never changes it, and a recompose cannot (it reuses the alpha maps)."""
    if "model" not in values:
        return default
    try:
        return _Model.model_validate({"model": once(values, "model")}).model
    except ValidationError:
        raise ApiError(400, "invalid_option", f"model={values.get('model')!r} is not offered; choose one of "
                                              f"{model_choices()}") from None
