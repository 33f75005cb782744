"""What a request may carry, said once: the server validates with these pydantic models and
web/openapi.py renders them into the document (pydantic's JSON Schema 2020-12 is the schema
dialect of OpenAPI 3.1), so a range, an enum or a pattern cannot differ between the two.

Form fields arrive as text and JSON bodies as values; both go through the same validators.
Parsing is strict: an integer is ASCII digits (Python's int() also takes ' 7 ', '٧' and '1_0'),
and a field that is sent must be valid — an empty one is not "unset". Choice words (formats,
presets, models, colour names, booleans) are case-insensitive.
"""

import re
from typing import Annotated, Any, ClassVar

from PIL import ImageColor
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from matting_core.options import FORMATS, PRESETS, RANGES
from matting_core.registry import model_choices, model_names

_DIGITS = re.compile(r"0|[1-9][0-9]{0,8}")  # what a JSON integer looks like as text, nine digits at most
TRUE, FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")
FORMAT_CHOICES = (*FORMATS, "jpeg")  # "jpeg" is read as "jpg"
# #rgb, #rgba, #rrggbb or #rrggbbaa, the '#' optional (typed into a shell) — matting_core.compose.parse_color
HEX_COLOR = "#?([0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})"
COLOR_WORDS = ("transparent", "none")  # no background, even over a preset's colour
COLOR_NAMES = tuple(sorted(ImageColor.colormap))
BASE64 = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"  # padded, as base64.b64decode wants it
BINARY = {"type": "string", "format": "binary"}


def _fail(message: str):
    return PydanticCustomError("invalid", message)


def _whole(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):  # JSON true is not 1
        return value
    if isinstance(value, float) and value.is_integer():  # JSON 5.0: an integer to JSON Schema
        return int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise _fail("must be a whole number written in ASCII digits (e.g. 7; no sign, spaces or leading zeros)")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in TRUE + FALSE:
        return value.lower() in TRUE
    raise _fail("must be true or false")


def _choice(what: str, choices: tuple[str, ...]):
    def check(value: Any) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise _fail(f"is not one of {', '.join(choices)}{what}")
    return check


def _color(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(HEX_COLOR, value):
        return value
    if isinstance(value, str) and value.lower() in COLOR_WORDS + COLOR_NAMES:
        return value.lower()
    raise _fail("is not a colour; use #rrggbb, #rrggbbaa or a CSS name like 'white' (or transparent)")


def Whole(name: str):  # noqa: N802 - a type, as it reads in the models
    low, high = RANGES[name]
    # The range before the validator: pydantic then writes it as minimum/maximum (after it: ge/le, not JSON Schema).
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole)]


def Choice(choices: tuple[str, ...], description: str = "", hint: str = ""):  # noqa: N802
    schema = {"type": "string", "enum": list(choices)} | ({"description": description} if description else {})
    return Annotated[str, BeforeValidator(_choice(hint, choices)), WithJsonSchema(schema)]


Flag = Annotated[bool, BeforeValidator(_flag), WithJsonSchema(
    {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": [*TRUE, *FALSE]}]})]
COLOR_SCHEMA = {
    "description": "#rrggbb, #rrggbbaa, #rgb or #rgba (the '#' optional), a CSS colour name, or transparent",
    "anyOf": [{"type": "string", "pattern": f"^{HEX_COLOR}$"},
              {"type": "string", "enum": [*COLOR_WORDS, *COLOR_NAMES]}]}
Color = Annotated[str, BeforeValidator(_color), WithJsonSchema(COLOR_SCHEMA)]
Binary = Annotated[Any, WithJsonSchema(BINARY)]
Format = Choice(FORMAT_CHOICES, "output format; jpeg means jpg", hint=" (jpeg means jpg)")


class Form(BaseModel):
    """A request body. The rules across its fields, stated in the document as JSON Schema and
    checked by the views named with each: which file fields must be there (any of SOURCES), at
    least one of AT_LEAST_ONE, and on jpg an opaque bg_color (Options.__post_init__)."""
    model_config = ConfigDict(extra="ignore")  # other fields (csrf_token, remove.bg's extras) are not ours
    SOURCES: ClassVar[tuple[str, ...]] = ()  # web/uploads.py, web/compat.py
    AT_LEAST_ONE: ClassVar[tuple[str, ...]] = ()  # web/api.py recompose_job
    JPG_IF: ClassVar[dict | None] = None  # when the output is jpg: matting_core/options.py

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler.resolve_ref_schema(handler(core_schema))
        required = [[{"required": [name]} for name in names] for names in (cls.SOURCES, cls.AT_LEAST_ONE) if names]
        if len(required) == 1:
            schema["anyOf"] = required[0]
        if cls.JPG_IF:
            # jpg has no alpha channel: a translucent background is a 400 there (unless only the mask is written).
            # Said as not(jpg and translucent) rather than if/then, which schemathesis 4.32 cannot draw from
            # next to binary fields.
            translucent = {"required": ["bg_color"], "properties": {"bg_color": {"pattern": f"^{TRANSLUCENT}$"}}}
            schema["not"] = {"allOf": [cls.JPG_IF, translucent]}
        return schema


# The hex colours with an alpha below ff (#rgba, #rrggbbaa).
TRANSLUCENT = "#?([0-9a-fA-F]{3}[0-9a-eA-E]|[0-9a-fA-F]{6}([0-9a-eA-E][0-9a-fA-F]|[fF][0-9a-eA-E]))"
_MASK_ON = {"required": ["mask"], "properties": {"mask": {"enum": [True, *TRUE]}}}
_JPG = {"required": ["format"], "properties": {"format": {"enum": ["jpg", "jpeg"]}}}
_JPG_PRESETS = [name for name, values in PRESETS.items() if values.get("format") == "jpg"]
_JPG_BY_PRESET = {"required": ["preset"], "properties": {"preset": {"enum": _JPG_PRESETS}},
                  "not": {"required": ["format"]}}


class OptionFields(Form):
    """The options of every endpoint that makes images (matting_core.options.Options, and `preset`)."""
    JPG_IF = {"anyOf": [_JPG, _JPG_BY_PRESET], "not": _MASK_ON}

    format: Format = None
    bg_color: Color = None
    alpha_threshold: Whole("alpha_threshold") = None
    erode_kernel: Whole("erode_kernel") = None
    feather_edge: Flag = None
    feather_radius: Whole("feather_radius") = None
    refine: Flag = None
    despill: Flag = None
    mask: Flag = None
    quality: Whole("quality") = None
    crop: Flag = None
    preset: Choice(tuple(PRESETS), "the original WebUI's settings; options sent with it win") = None

    NAMES: ClassVar[tuple[str, ...]] = ()  # filled below: every option's field name


OptionFields.NAMES = tuple(OptionFields.model_fields)
ModelName = Choice(tuple(model_names()), f"the model to run: {model_choices()}")


class JobForm(OptionFields):
    SOURCES = ("images", "archive")  # both may come together: the portal sends chosen photos and zips at once
    images: Annotated[list[Binary], Field(min_length=1)] = None
    archive: Binary = None
    model: ModelName = None


class RemoveForm(OptionFields):
    image: Binary
    model: ModelName = None


class BatchForm(Form):
    """The original WebUI's call takes these options only."""
    JPG_IF = _JPG
    images: Annotated[list[Binary], Field(min_length=1)]
    format: Format = None
    bg_color: Color = None
    alpha_threshold: Whole("alpha_threshold") = None
    feather_edge: Flag = None
    erode_kernel: Whole("erode_kernel") = None
    model: ModelName = None


class RecomposeBody(OptionFields):
    """At least one option: a recompose that changes nothing is a 400, not a re-run of the defaults."""
    AT_LEAST_ONE = OptionFields.NAMES
    model: ModelName = None  # the job's own, or left out: the alpha maps are that model's


REMOVEBG_SIZES = ("auto", "preview", "small", "regular", "medium", "hd", "4k", "full", "50mp")
URL = "^[Hh][Tt][Tt][Pp][Ss]?://"


class RemoveBgForm(Form):
    """remove.bg's fields (https://www.remove.bg/api): an image source, how to render it. Of several
    sources image_file wins, then image_file_b64, then image_url; each one sent must be valid."""
    SOURCES = ("image_file", "image_file_b64", "image_url")
    JPG_IF = {**_JPG, "not": {"required": ["channels"], "properties": {"channels": {"const": "alpha"}}}}
    image_file: Binary = None
    image_file_b64: Annotated[str, WithJsonSchema({"type": "string", "minLength": 4, "pattern": f"^{BASE64}$",
                                                   "description": "the image, base64 (padded)"})] = None
    image_url: Annotated[str, WithJsonSchema({"type": "string", "format": "uri", "pattern": URL,
                                              "description": "a public http(s) URL of the image"})] = None
    size: Choice(REMOVEBG_SIZES, "accepted for compatibility; the result keeps the input's size") = None
    format: Choice(("auto", "png", "jpg", "webp"), "auto: jpg on an opaque colour, else png") = None
    bg_color: Color = None
    channels: Choice(("rgba", "alpha"), "alpha: the mask alone") = None
    crop: Flag = None
    model: ModelName = None


def present(form_sources: tuple[str, ...], names) -> list[str]:
    """Which of a form's source fields were sent (`names`: the request's field names)."""
    return [name for name in form_sources if name in names]
