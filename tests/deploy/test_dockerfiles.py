"""docker/: images that bake the weights, run unprivileged and hand SIGTERM to the process."""

import json
import os
import re
import subprocess

import pytest

from tests.deploy.conftest import ROOT

DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gpu")
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "docker" / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage(name: str) -> list[tuple[str, str]]:
    steps = instructions(name)
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_runs_as_a_non_root_user(name):
    users = [args for op, args in final_stage(name) if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_image_bakes_the_weights_into_a_fixed_home(name):
    steps = instructions(name)
    assert any(op == "RUN" and "cutout weights" in args for op, args in steps)
    assert any(op == "ENV" and "CUTOUT_HOME=/opt/cutout" in args for op, args in final_stage(name))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_and_cmd_are_exec_form(name):
    for op in ("ENTRYPOINT", "CMD"):
        (args,) = [a for o, a in final_stage(name) if o == op]
        assert isinstance(json.loads(args), list), f"{op} in shell form would not be PID 1"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_project_is_installed_without_editable_mode(name):
    installs = [args for op, args in instructions(name) if op == "RUN" and "pip install" in args]
    assert any("src" in args for args in installs) and not any(" -e " in args for args in installs)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_sources_exist(name):
    for op, args in instructions(name):
        if op == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_cpu_image_is_python_311_with_cpu_torch():
    (base,) = [args for op, args in instructions("Dockerfile.cpu") if op == "ARG" and "PYTHON_IMAGE" in args]
    assert "python:3.11" in base
    assert any("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in args
               for op, args in instructions("Dockerfile.cpu") if op == "RUN")


def test_gpu_image_keeps_the_base_image_cuda_torch():
    steps = instructions("Dockerfile.gpu")
    assert any(op == "ARG" and "pytorch/pytorch:" in args and "cuda" in args for op, args in steps)
    (install,) = [args for op, args in steps if op == "RUN" and "pip install" in args]
    assert "-c /tmp/torch-constraint.txt" in install and "torch.version.cuda" in install


def test_dockerignore_keeps_the_packages_in_the_build_context():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!matting_core/", "!cutout_cli/", "!tasks/", "!web/", "!setup.cfg", "!docker/entrypoint.sh"):
        assert needed in lines


def test_entrypoint_execs_the_command_and_clears_stale_metrics(tmp_path):
    assert os.access(ENTRYPOINT, os.X_OK)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"stale")
    proc = subprocess.Popen([str(ENTRYPOINT), "sh", "-c", 'echo $$; ls -A "$PROMETHEUS_MULTIPROC_DIR"'],
                            env={"PATH": os.environ["PATH"], "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=10)
    pid, *left = out.split()
    assert int(pid) == proc.pid, "the command must replace the entrypoint (exec), not run as its child"
    assert left == []
