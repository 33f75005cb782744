"""Storage keys come from the job and the item alone, and never leave the job's prefix."""

import pytest

from tasks.keys import alpha_key, input_key, job_prefix, output_key, zip_key

KEY_OF_ITEM = [input_key, alpha_key, lambda job, i: output_key(job, i, "png")]
KEY_OF_JOB = [job_prefix, zip_key, lambda job: input_key(job, 0), lambda job: output_key(job, 0, "png")]


def test_keys_are_derived_from_job_and_item_only():
    assert job_prefix("Job_1-a") == "jobs/Job_1-a/"
    assert input_key("Job_1-a", 0) == "jobs/Job_1-a/in/0"
    assert alpha_key("Job_1-a", 7) == "jobs/Job_1-a/alpha/7.png"
    assert output_key("Job_1-a", 12, "webp") == "jobs/Job_1-a/out/12.webp"
    assert zip_key("Job_1-a") == "jobs/Job_1-a/cutout-Job_1-a.zip"


def test_the_same_task_always_gets_the_same_key():
    assert [output_key("j", 3, "png") for _ in range(2)] == ["jobs/j/out/3.png"] * 2


@pytest.mark.parametrize("key_of", KEY_OF_ITEM)
def test_every_item_key_sits_under_its_job_prefix_and_differs_per_item(key_of):
    keys = [key_of("ab", i) for i in range(3)]
    assert all(key.startswith(job_prefix("ab")) for key in keys)
    assert len(set(keys)) == 3


def test_a_job_prefix_does_not_cover_a_job_whose_id_extends_it():
    # delete_prefix is a string prefix: "jobs/ab" would also delete job "abc".
    keys_of_abc = [input_key("abc", 0), alpha_key("abc", 0), output_key("abc", 0, "png"), zip_key("abc")]
    assert not any(key.startswith(job_prefix("ab")) for key in keys_of_abc)


def test_job_ids_of_64_characters_are_accepted():
    assert job_prefix("x" * 64) == f"jobs/{'x' * 64}/"


@pytest.mark.parametrize("job", ["", "../x", "a/b", "..", ".", "x" * 65, "a b", "ab\n", "jöb", None, 7, b"ab"])
@pytest.mark.parametrize("key_of", KEY_OF_JOB)
def test_invalid_job_ids_are_refused(key_of, job):
    with pytest.raises(ValueError, match="must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"):
        key_of(job)


@pytest.mark.parametrize("index", [0, 10**12])
def test_item_index_zero_and_large_are_accepted(index):
    assert input_key("j", index) == f"jobs/j/in/{index}"


@pytest.mark.parametrize("index", [-1, True, False, "1", 1.0, None])
@pytest.mark.parametrize("key_of", KEY_OF_ITEM)
def test_invalid_item_indices_are_refused(key_of, index):
    with pytest.raises(ValueError, match=r"item index .* must be an int >= 0"):
        key_of("j", index)


@pytest.mark.parametrize("ext", ["png", "JPG", "x" * 10])
def test_extensions_of_letters_and_digits_are_accepted(ext):
    assert output_key("j", 0, ext) == f"jobs/j/out/0.{ext}"


@pytest.mark.parametrize("ext", ["", ".png", "p/ng", "../x", "x" * 11, "png\n", "pn g", None, 5])
def test_invalid_extensions_are_refused(ext):
    with pytest.raises(ValueError, match="must be 1 to 10 letters or digits, without the dot"):
        output_key("j", 0, ext)
