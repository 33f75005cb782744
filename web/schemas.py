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


class OptionFields(BaseModel):
    """The options of every endpoint that makes images (matting_core.options.Options, and `preset`)."""
    model_config = ConfigDict(extra="ignore")  # other fields (files, model, csrf_token) are not options

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


class Sources(BaseModel):
    """A form with files: which file fields must be there (any or exactly one of SOURCES)."""
    model_config = ConfigDict(extra="ignore")
    SOURCES: ClassVar[tuple[str, ...]] = ()
    EXACTLY_ONE: ClassVar[bool] = False

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler.resolve_ref_schema(handler(core_schema))
        if cls.SOURCES:
            schema["oneOf" if cls.EXACTLY_ONE else "anyOf"] = [{"required": [name]} for name in cls.SOURCES]
        return schema


class JobForm(Sources, OptionFields):
    SOURCES = ("images", "archive")  # both may come together: the portal sends chosen photos and zips at once
    images: Annotated[list[Binary], Field(min_length=1)] = None
    archive: Binary = None
    model: ModelName = None


class RemoveForm(OptionFields):
    image: Binary
    model: ModelName = None


class BatchForm(Sources):
    """The original WebUI's call takes these options only."""
    SOURCES = ("images",)
    images: Annotated[list[Binary], Field(min_length=1)] = None
    format: Format = None
    bg_color: Color = None
    alpha_threshold: Whole("alpha_threshold") = None
    feather_edge: Flag = None
    erode_kernel: Whole("erode_kernel") = None
    model: ModelName = None


class RecomposeBody(OptionFields):
    """At least one option: a recompose that changes nothing is a 400, not a re-run of the defaults."""
    model: ModelName = None  # the job's own, or left out: the alpha maps are that model's

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["anyOf"] = [{"required": [name]} for name in OptionFields.NAMES]
        return schema


REMOVEBG_SIZES = ("auto", "preview", "small", "regular", "medium", "hd", "4k", "full", "50mp")


class RemoveBgForm(Sources):
    """remove.bg's fields (https://www.remove.bg/api): one image source, how to render it."""
    SOURCES, EXACTLY_ONE = ("image_file", "image_file_b64", "image_url"), True
    image_file: Binary = None
    image_file_b64: Annotated[str, WithJsonSchema({"type": "string", "contentEncoding": "base64", "minLength": 4,
                                                   "pattern": f"^{BASE64}$"})] = None
    image_url: Annotated[str, WithJsonSchema({"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                                              "description": "a public http(s) URL of the image"})] = None
    size: Choice(REMOVEBG_SIZES, "accepted for compatibility; the result keeps the input's size") = None
    format: Choice(("auto", "png", "jpg", "webp"), "auto: png when transparent, jpg on a colour") = None
    bg_color: Color = None
    channels: Choice(("rgba", "alpha"), "alpha: the mask alone") = None
    crop: Flag = None
    model: ModelName = None


def present(form_sources: tuple[str, ...], names) -> list[str]:
    """Which of a form's source fields were sent (`names`: the request's field names)."""
    return [name for name in form_sources if name in names]
