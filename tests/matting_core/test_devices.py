"""usable_cores: a container's CPU limit (a CFS quota, not a smaller CPU set) caps the model's threads."""

import os

import pytest

from matting_core.devices import usable_cores

HOST = len(os.sched_getaffinity(0))


def cgroup_v2(tmp_path, cpu_max: str):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def cgroup_v1(tmp_path, quota: str, period: str = "100000"):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(period + "\n")
    return tmp_path


@pytest.mark.parametrize(("cpu_max", "cores"), [("100000 100000", 1), ("50000 100000", 1),
                                                 ("150000 100000", min(HOST, 2)), ("max 100000", HOST)])
def test_a_cgroup_v2_quota_caps_the_cores_rounded_up(tmp_path, cpu_max, cores):
    assert usable_cores(cgroup_v2(tmp_path, cpu_max)) == cores


@pytest.mark.parametrize(("quota", "cores"), [("100000", 1), ("250000", min(HOST, 3)), ("-1", HOST)])
def test_a_cgroup_v1_quota_caps_the_cores_rounded_up(tmp_path, quota, cores):
    assert usable_cores(cgroup_v1(tmp_path, quota)) == cores


def test_no_quota_file_or_a_garbled_one_leaves_the_cpu_set(tmp_path):
    assert usable_cores(tmp_path) == HOST
    assert usable_cores(cgroup_v2(tmp_path, "lots")) == HOST


def test_a_quota_never_raises_the_count_above_the_cpu_set(tmp_path):
    assert usable_cores(cgroup_v2(tmp_path, f"{(HOST + 4) * 100000} 100000")) == HOST
