import pytest

from matting_core.options import Options, resolve_options


def test_defaults_leave_the_models_alpha_as_it_is():
    # Measured in bench/matting_quality.py and README "Matting quality": no step on by default.
    assert Options() == resolve_options(raw=True)
    assert Options().format == "png"


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("id-photo", {"alpha_threshold": 15, "erode_kernel": 2, "format": "jpg", "bg_color": "#ffffff"}),
        ("ecommerce", {"refine": True, "feather_edge": True, "format": "png"}),
        ("avatar", {"alpha_threshold": 8, "erode_kernel": 1}),
    ],
)
def test_presets_set_their_values(preset, expected):
    opts = resolve_options(preset)
    assert {k: getattr(opts, k) for k in expected} == expected


def test_explicit_options_win_over_a_preset():
    assert resolve_options("id-photo", alpha_threshold=40).alpha_threshold == 40


def test_unset_overrides_keep_the_preset():
    assert resolve_options("id-photo", alpha_threshold=None).alpha_threshold == 15


def test_raw_turns_every_postprocessing_step_off():
    opts = resolve_options(raw=True)
    assert (opts.alpha_threshold, opts.erode_kernel, opts.feather_edge, opts.refine) == (0, 0, False, False)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="id-photo, ecommerce, avatar"):
        resolve_options("passport")


@pytest.mark.parametrize("field, value, message", [
    ("format", "gif", "png, jpg, webp"),
    ("alpha_threshold", 300, "0-255"),
    ("erode_kernel", -1, "0-50"),
    ("quality", 0, "1-100"),
])
def test_out_of_range_options_say_the_valid_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        Options(**{field: value})


def test_mask_output_is_always_png():
    assert Options(format="jpg", mask=True).extension == "png"


def test_a_bad_background_colour_is_refused_when_options_are_made():
    with pytest.raises(ValueError, match="not a colour"):
        Options(bg_color="blurple")


def test_jpg_refuses_a_translucent_background():
    with pytest.raises(ValueError, match="jpg has no transparency"):
        Options(format="jpg", bg_color="#ff000080")
