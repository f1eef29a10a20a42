"""Fleet scale and air-gapped delivery: one round trip per converged host, one download per fleet."""

from __future__ import annotations

import re
import subprocess
import sys

import mirror as mirror_module
import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, client_call, deploy, plan
from pyinfra_cli import run_pyinfra

pytestmark = pytest.mark.hosts

# What a converged host may cost: the one BuildHostState fact command. A regression fails here.
CONVERGED_COMMANDS_PER_HOST = 1


def remote_commands(run) -> dict[str, int]:
    """Commands pyinfra ran per host, from its --debug log."""
    counts: dict[str, int] = {}
    for host_name in re.findall(r"Running command on (\S+?): ", run.output):
        counts[host_name] = counts.get(host_name, 0) + 1
    return counts


def test_converged_hosts_cost_one_remote_command_each(boot_hosts, mirror):
    hosts = boot_hosts(3, image=testhosts.TRIXIE_CONTAINERD)
    entries = inventory(hosts, **deploy_data(mirror, buildkit_socket_group="builders", nerdctl_docker_alias=True))
    deploy(entries, {})

    rerun = run_pyinfra(entries, DEPLOY, extra_args=("--debug",))

    assert rerun.returncode == 0, rerun.output
    assert remote_commands(rerun) == {host.name: CONVERGED_COMMANDS_PER_HOST for host in hosts}


def test_each_archive_is_fetched_once_per_fleet_with_download_on_controller(boot_hosts, mirror, tmp_path):
    hosts = boot_hosts(3, image=testhosts.TRIXIE_CONTAINERD)
    data = deploy_data(mirror, download_on_controller=True, release_cache_dir=str(tmp_path / "cache"))
    entries = inventory(hosts, **data)
    seen = len(mirror.requests)

    deploy(entries, {})

    fetched = [path for path, status, _ in mirror.requests[seen:] if status == 200 and path.endswith(".tar.gz")]
    assert sorted(fetched) == [
        mirror_module.nerdctl_path("2.4.0", "nerdctl-2.4.0-linux-amd64.tar.gz"),
        mirror_module.buildkit_path("0.12.5", "buildkit-v0.12.5.linux-amd64.tar.gz"),
    ]
    assert not any(agent.startswith(("curl", "Wget")) for agent in mirror.user_agents[seen:])
    for host in hosts:
        assert client_call(host)["buildkitd.version"] == "0.12.5"
        assert host.run("ls -a /tmp").stdout.count("pyinfra-nerdctl") == 0
    assert plan(entries, {}) == {}
    assert len(mirror.requests) == seen + len(fetched) + 1  # and the one SHA256SUMS, nothing since


def test_without_download_on_controller_each_host_fetches_its_own(boot_hosts, mirror):
    hosts = boot_hosts(3, image=testhosts.TRIXIE_CONTAINERD)
    seen = len(mirror.requests)

    deploy(inventory(hosts, **deploy_data(mirror)), {})

    archives = [path for path, status, _ in mirror.requests[seen:] if status == 200 and path.endswith(".tar.gz")]
    assert len(archives) == 2 * len(hosts) and len(set(archives)) == 2


def test_prefetched_folder_serves_an_offline_fleet(boot_hosts, mirror, tmp_path):
    folder = tmp_path / "releases"
    buildkit_asset = mirror_module.buildkit_asset("0.12.5", "amd64")
    pin = mirror_module.sha256(mirror_module.buildkit_archive("0.12.5", "amd64"))
    prefetch = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyinfra_nerdctl.deploys.controller",
            str(folder),
            "--github-url",
            mirror.url,
            "--nerdctl",
            "2.4.0",
            "--buildkit",
            "v0.12.5",
            "--arch",
            "amd64",
            "--pin",
            f"{buildkit_asset}={pin}",
        ],
        capture_output=True,
        text=True,
    )
    assert prefetch.returncode == 0, prefetch.stderr
    assert (folder / "containerd/nerdctl/releases/download/v2.4.0/SHA256SUMS").exists()
    assert (folder / f"moby/buildkit/releases/download/v0.12.5/{buildkit_asset}").exists()

    hosts = boot_hosts(2, image=testhosts.TRIXIE_CONTAINERD)
    mirror.fail("404")  # from here on, no mirror at all
    data = {**deploy_data(mirror), "github_url": str(folder), "release_cache_dir": str(tmp_path / "cache")}
    deploy(inventory(hosts, **data), {})

    for host in hosts:
        assert client_call(host)["buildkitd.version"] == "0.12.5"
        assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"
