"""Output names and the manifest, shared by the CLI and the service (matting_core/manifest.py)."""

import json
import subprocess
import sys
import time
import unicodedata

import pytest
from jsonschema import Draft202012Validator, ValidationError

from matting_core.manifest import (
    MANIFEST,
    MAX_NAME_BYTES,
    SCHEMA,
    build,
    file_entry,
    output_name,
    output_names,
    safe_name,
    unique_names,
)
from matting_core.options import Options
from matting_core.registry import get_spec
from tests.manifests import SCHEMA_FILE, validated


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("photo.jpg", "photo.jpg"),
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("/etc/shadow.png", "shadow.png"),
        ("C:\\x\\y.png", "y.png"),
        ("C:y.png", "y.png"),
        ("\\\\server\\share\\z.png", "z.png"),
        ("dir/", "image"),
        ("a\x00b\nc\x7f.png", "a_b_c_.png"),
        ('ab:c*d?e"f<g>h|i.png', "ab_c_d_e_f_g_h_i.png"),
        ("invoice\u202egnp.exe", "invoice_gnp.exe"),
        ("x\u200by\u2028.png", "x_y_.png"),
        (".bashrc", "bashrc"),
        ("..hidden.png", "hidden.png"),
        (". . x.png", "x.png"),
        ("photo.png...", "photo.png"),
        ("photo.png  ", "photo.png"),
        ("photo. . .", "photo"),
        ("", "image"),
        ("...", "image"),
        ("  ", "image"),
        ("../..", "image"),
        ("CON.png", "_CON.png"),
        ("con.tar.gz", "_con.tar.gz"),
        ("Nul", "_Nul"),
        ("LPT9.jpg", "_LPT9.jpg"),
        ("COM1.webp", "_COM1.webp"),
        ("CONSOLE.png", "CONSOLE.png"),
        ("icon.png", "icon.png"),
    ],
)
def test_safe_name_keeps_only_a_plain_visible_file_name(name, safe):
    assert safe_name(name) == safe


def test_safe_name_joins_decomposed_accents():
    nfd, nfc = "cafe\u0301.png", "caf\u00e9.png"
    assert safe_name(nfd) == safe_name(nfc) == nfc
    assert unicodedata.is_normalized("NFC", safe_name("Ame\u0301lie\u0300.jpg"))


@pytest.mark.parametrize(("char", "kept"), [("a", 146), ("é", 73), ("日", 48), ("😀", 36)])
def test_safe_name_shortens_long_names_on_a_character_boundary_keeping_the_extension(char, kept):
    safe = safe_name(char * 300 + ".png")
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert safe == char * kept + ".png"


def test_safe_name_treats_a_very_long_extension_as_part_of_the_name():
    safe = safe_name("notes.this-is-not-an-extension-at-all" + "x" * 200)
    assert len(safe.encode()) == MAX_NAME_BYTES
    assert safe.startswith("notes.this-is-not")


def test_safe_name_never_ends_with_a_dot_after_shortening():
    # 149 letters, a dot, then an "extension" too long to keep: the cut lands right after the dot.
    safe = safe_name("a" * 149 + "." + "b" * 20)
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert not safe.endswith((".", " "))


def test_unique_names_suffixes_case_insensitive_duplicates_in_order():
    names = ["a.png", "A.PNG", "b.png", "a.png", "a.PNG"]
    assert unique_names(names) == ["a.png", "A-2.PNG", "b.png", "a-3.png", "a-4.PNG"]


def test_unique_names_skips_suffixes_already_taken():
    assert unique_names(["a-2.png", "a.png", "a.png"]) == ["a-2.png", "a.png", "a-3.png"]


@pytest.mark.parametrize("name", ["manifest.json", "Manifest.JSON"])
def test_unique_names_never_produces_the_manifest_name(name):
    unique = unique_names([name, name])
    assert all(n.casefold() != MANIFEST for n in unique)
    assert len({n.casefold() for n in unique}) == 2


def test_unique_names_keeps_thousands_of_equal_names_unique_and_short():
    long = "x" * 146 + ".png"
    unique = unique_names(["photo.jpg"] * 3000 + [long] * 3000)
    assert len({n.casefold() for n in unique}) == 6000
    assert unique[:3] == ["photo.jpg", "photo-2.jpg", "photo-3.jpg"] and unique[2999] == "photo-3000.jpg"
    assert all(len(n.encode()) <= MAX_NAME_BYTES and n.endswith(".png") for n in unique[3000:])


def test_unique_names_is_linear_in_equal_names():
    started = time.perf_counter()
    unique_names(["photo.jpg"] * 20_000)
    assert time.perf_counter() - started < 1.0  # quadratic probing would take minutes


@pytest.mark.parametrize(("name", "ext", "output"), [
    ("photo.jpg", "png", "photo.png"),
    ("../shots/Cat.JPG", "webp", "Cat.webp"),
    ("C:\\Users\\me\\scan.tiff", "jpg", "scan.jpg"),
    ("archive.tar.gz", "png", "archive.tar.png"),
    ("con.jpg", "png", "_con.png"),
    (".jpg", "png", "jpg.png"),
    ("...", "png", "image.png"),
    ("a" * 300 + ".jpg", "webp", "a" * 145 + ".webp"),
])
def test_output_name_is_the_inputs_safe_stem_with_the_outputs_extension(name, ext, output):
    assert output_name(name, ext) == output
    assert len(output_name(name, ext).encode()) <= MAX_NAME_BYTES


def test_output_names_are_unique_ignoring_case_in_input_order_whatever_the_input_extension():
    names = ["cat.jpg", "Cat.jpeg", "dir/cat.png", "manifest.jpg", "notes.heic"]
    assert output_names(names, ["png", "png", "png", "json", "webp"]) == [
        "cat.png", "Cat-2.png", "cat-3.png", "manifest-2.json", "notes.webp"]


def test_output_names_want_one_extension_per_input():
    with pytest.raises(ValueError):
        output_names(["a.jpg", "b.jpg"], ["png"])


# --- the manifest and its schema ---------------------------------------------------------------------

def test_the_published_schema_file_is_the_one_the_code_defines():
    # docs/manifest.schema.json is written by `python -m matting_core.manifest`; rerun it when this fails.
    assert json.loads(SCHEMA_FILE.read_text()) == SCHEMA
    written = subprocess.run([sys.executable, "-m", "matting_core.manifest"], capture_output=True, text=True,
                             check=True).stdout
    assert written == SCHEMA_FILE.read_text()


def test_the_schema_is_a_valid_draft_2020_12_schema_naming_every_option():
    Draft202012Validator.check_schema(SCHEMA)
    assert set(SCHEMA["properties"]["options"]["properties"]) == set(Options.__dataclass_fields__)


FILES = [file_entry("a.jpg", "a.png", "done", batch_size=2, timings_ms={"infer": 30.0}),
         file_entry("b.jpg", "b.png", "failed", "b.jpg: not an image")]


def test_a_service_manifest_has_the_job_and_no_clock():
    body = validated(build(get_spec("u2netp"), Options(), FILES, job="j1"))
    assert body["job"] == "j1"
    assert body["model"] == {"name": "u2netp", "weights_sha256": get_spec("u2netp").sha256}
    assert body["summary"] == {"total": 2, "done": 1, "failed": 1}
    assert body["files"][1] == {"input": "b.jpg", "output": None, "status": "failed",
                                "error": "b.jpg: not an image", "batch_size": None, "timings_ms": {}}


def test_a_cli_manifest_has_the_device_precision_and_speed_and_no_job():
    body = validated(build(get_spec("u2net"), Options(format="webp"), FILES, device="cpu", precision="bf16",
                           seconds=4.0))
    assert "job" not in body and body["options"]["format"] == "webp"
    assert body["model"] == {"name": "u2net", "weights_sha256": get_spec("u2net").sha256, "device": "cpu",
                            "precision": "bf16"}
    assert body["summary"] == {"total": 2, "done": 1, "failed": 1, "seconds": 4.0, "images_per_second": 0.25}


@pytest.mark.parametrize("change", [
    lambda m: m.update(extra=1),
    lambda m: m["files"][0].update(status="pending"),
    lambda m: m["model"].update(weights_sha256="abc"),
    lambda m: m["options"].update(format="gif"),
    lambda m: m["summary"].pop("failed"),
])
def test_the_schema_refuses_a_manifest_that_drifted(change):
    body = build(get_spec("u2netp"), Options(), [dict(f) for f in FILES], job="j1")
    change(body)
    with pytest.raises(ValidationError):
        validated(body)
