"""docker/: images that bake the weights, run unprivileged and hand SIGTERM to the process."""

import json
import os
import re
import subprocess

import pytest

from tests.deploy.conftest import ROOT, role_argv

DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gpu")
PYPI = "https://pypi.org/simple"
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


def test_cpu_image_takes_its_base_torch_and_indexes_as_build_arguments():
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for op, a in instructions("Dockerfile.cpu") if op == "ARG"}
    assert args["BASE_IMAGE"].startswith("python:3.11")
    assert args["TORCH_SPEC"] == "torch==2.13.0" and args["TORCH_INDEX_URL"] == args["PIP_INDEX_URL"] == PYPI
    runs = " ".join(a for op, a in instructions("Dockerfile.cpu") if op == "RUN")
    assert "download.pytorch.org" not in runs and 'pip install "$TORCH_SPEC"' in runs


@pytest.mark.parametrize("name", DOCKERFILES)
def test_local_wheels_and_the_ca_bundle_are_mounted_never_copied(name):
    steps = instructions(name)
    assert not any(op == "COPY" and "docker/wheels" in args for op, args in steps)
    pip_runs = [args for op, args in steps if op == "RUN" and "pip install" in args]
    for args in pip_runs:
        assert "--mount=type=bind,source=docker/wheels,target=/wheels" in args
        assert "--mount=type=secret,id=ca" in args and "with-index" in args
    # No `# syntax=` line: Docker 20.10's built-in frontend, nothing pulled from Docker Hub.
    assert not (ROOT / "docker" / name).read_text().startswith("# syntax")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_weights_are_one_layer_without_a_chmod_copy(name):
    final = final_stage(name)
    assert not any(op == "RUN" and "chmod -R" in args for op, args in instructions(name))
    weight_copies = [args for op, args in final if op == "COPY" and "/opt/cutout" in args]
    assert len(weight_copies) <= 1


def test_gpu_image_keeps_the_base_image_cuda_torch():
    steps = instructions("Dockerfile.gpu")
    assert any(op == "ARG" and "pytorch/pytorch:" in args and "cuda" in args for op, args in steps)
    (install,) = [args for op, args in steps if op == "RUN" and "pip install" in args]
    assert "-c /tmp/torch.txt" in install and "torch.version.cuda" in install
    # The installed distribution's version, not torch.__version__ (2.13.0+cu130 on PyPI's build,
    # which pip can't find as a distribution version).
    assert 'm.version("torch")' in install and "torch.__version__" not in install.split("torch.version.cuda")[0]


def test_with_index_points_pip_at_the_index_wheels_and_ca(tmp_path):
    script = ROOT / "docker" / "with-index.sh"
    show = ["sh", "-c", 'echo "${PIP_INDEX_URL:-}|${PIP_NO_INDEX:-}|${PIP_CERT:-}"']
    env = {"PATH": os.environ["PATH"]}
    assert subprocess.run(["sh", str(script), PYPI, *show], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == f"{PYPI}||"
    assert subprocess.run(["sh", str(script), "none", *show], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "|1|"


def test_dockerignore_keeps_the_packages_in_the_build_context():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("!matting_core/", "!cutout_cli/", "!tasks/", "!web/", "!setup.cfg", "!docker/entrypoint.sh",
                   "!docker/with-index.sh", "!docker/wheels/"):
        assert needed in lines
    # The wheels directory is in the build context, never in git.
    assert (ROOT / "docker" / "wheels" / ".gitignore").read_text().split() == ["*", "!.gitignore"]


@pytest.mark.parametrize(("role", "queue"), [("worker-cpu", "cpu,control"), ("worker-gpu", "gpu")])
def test_entrypoint_turns_a_worker_role_into_its_celery_command(role, queue):
    argv = role_argv([role], {"WORKER_CONCURRENCY": "3", "WORKER_NAME": "pod-7"})
    assert argv[:4] == ["celery", "-A", "tasks.app", "worker"]
    assert argv[argv.index("-Q") + 1] == queue and argv[argv.index("-c") + 1] == "3"
    assert argv[argv.index("-n") + 1] == "worker@pod-7"


def test_entrypoint_probe_leaves_the_metrics_directory_alone(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_1.db").write_bytes(b"live")
    # beat's probe really runs here: it checks PID 1 of this machine, which is running.
    done = subprocess.run([str(ENTRYPOINT), "probe", "alive", "beat"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "PROMETHEUS_MULTIPROC_DIR": str(metrics)}, timeout=10)
    assert done.returncode == 0 and (metrics / "counter_1.db").exists()
    assert subprocess.run([str(ENTRYPOINT), "probe", "ready", "nothing"], capture_output=True).returncode == 2


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
