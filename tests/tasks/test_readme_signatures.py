"""The README documents the task API's calls as the code defines them."""

import inspect
import re
from pathlib import Path

import pytest

from tasks import submit

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("function", [submit.retry_job, submit.recompose])
def test_the_readme_gives_each_calls_parameters_as_the_code_names_them(function):
    documented = re.findall(rf"`{function.__name__}\(([^)]*)\)`", README)
    assert documented, f"README.md no longer documents {function.__name__}"
    expected = ", ".join(inspect.signature(function).parameters)
    assert set(documented) == {expected}, f"README.md: {function.__name__}({documented}); the code: ({expected})"
