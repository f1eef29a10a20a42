"""Disk (issue 22) with the real BuildKit daemon: the fact counts a real cache, ``prune_buildkit`` frees it,
and a socket-activated daemon is left as it was found (skipped, saying why, without the real archive)."""

from __future__ import annotations

import re

import pytest
from conftest import inventory
from hostcheck import DEPLOY, unit_state
from pyinfra_cli import run_pyinfra
from test_real_buildkit import BIN_DIR, boot_build_host, build_as_operator, real_data

pytestmark = pytest.mark.hosts

PRUNE = "pyinfra_nerdctl.deploys.prune_buildkit"
FREED = re.compile(r"freed (\d+) bytes \([0-9.]+ MB\) in (\d+) cache records; (.*)")


def disk_usage(hosts) -> dict:
    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.BuildkitDiskUsage", f"bin_dir={BIN_DIR}", as_json=True)
    assert facts.returncode == 0, facts.output
    (found,) = facts.json.values()
    return found[hosts[0][0]]


def freed(run) -> tuple[int, int, str]:
    match = FREED.search(run.output)
    assert match, run.output
    return int(match.group(1)), int(match.group(2)), match.group(3)


def test_the_fact_counts_built_cache_prune_frees_it_and_an_idle_daemon_stays_idle(boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    hosts = inventory([host])
    data = real_data(mirror, real_buildkit, bin_dir=BIN_DIR, buildkit_socket_group="buildkit")
    assert run_pyinfra(hosts, DEPLOY, data=data).returncode == 0

    # Idle (the check after the install stopped it): the fact does not start it to count.
    idle = disk_usage(hosts)
    assert idle["cache"] is None and "buildkit.service is not running" in idle["reason"]
    assert idle["filesystem"]["size"] > idle["filesystem"]["free"] > 0
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"

    build_as_operator(host, "docker.io/library/pnt-disk:1")
    built = disk_usage(hosts)
    assert built["cache"]["total"] > 3_000_000, built  # the busybox layer, at least
    assert built["cache"]["by_type"]["regular"] > 0 and built["reason"] is None

    # Idle again, with a cache: the prune starts BuildKit through its socket, frees, and stops it again.
    host.run("systemctl stop buildkit.service")
    run = run_pyinfra(hosts, PRUNE, "all=true", data=data)
    assert run.returncode == 0, run.output
    size, records, left = freed(run)
    assert size == built["cache"]["total"] and records > 0
    assert left == "buildkit.service stopped again, as it was found"
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"

    # Running: every option reaches the real buildctl, which takes them, and the daemon keeps running.
    build_as_operator(host, "docker.io/library/pnt-disk:2")
    pid = unit_state(host, "buildkit.service")["MainPID"]
    options = ("all=true", "keep_duration=0", "keep_storage=1KB", "keep_storage_min=1KB", "free_storage=1KB")
    run = run_pyinfra(hosts, PRUNE, *options, data=data)
    assert run.returncode == 0, run.output
    assert freed(run)[2] == "buildkit.service was running and still is"
    assert unit_state(host, "buildkit.service")["MainPID"] == pid
    assert disk_usage(hosts)["cache"] is not None


def test_a_bad_value_fails_naming_the_host_and_the_value_before_anything_runs(boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    hosts = inventory([host])
    data = real_data(mirror, real_buildkit, bin_dir=BIN_DIR)
    assert run_pyinfra(hosts, DEPLOY, data=data).returncode == 0
    run = run_pyinfra(hosts, PRUNE, "keep_duration=-2h", data=data)
    assert run.returncode != 0
    assert f"{host.name}: keep_duration='-2h' is not a duration" in run.output, run.output
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"
