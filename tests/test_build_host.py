"""install_build_host end to end, from the CLI, on real systemd hosts running a real containerd."""

from __future__ import annotations

import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import (
    DEPLOY,
    MANAGED_FILES,
    boot_containerd_host,
    buildkit_starts,
    client_call,
    deploy,
    mtimes,
    plan,
    start_k3s_containerd,
    unit_state,
)
from pyinfra_cli import run_pyinfra

pytestmark = pytest.mark.hosts


def test_fresh_host_default_containerd_then_rerun_changes_nothing(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host])
    data = deploy_data(mirror)

    run = run_pyinfra(hosts, DEPLOY, data=data)

    assert run.returncode == 0, run.output
    modes = host.run(f"stat -c '%n %U:%G %a' {' '.join(MANAGED_FILES)} /etc/buildkit /etc/nerdctl").stdout.splitlines()
    assert modes == [
        f"{path} root:root {'755' if '/bin/' in path or path.startswith('/etc/') and '.' not in path.rsplit('/', 1)[1] else '644'}"
        for path in (*MANAGED_FILES, "/etc/buildkit", "/etc/nerdctl")
    ]
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"
    assert host.run("/usr/local/bin/buildkitd --version").stdout.startswith(
        "buildkitd github.com/moby/buildkit v0.12.5 "
    )
    verify = host.run(
        "cd /etc/systemd/system && systemd-analyze verify --man=no buildkit.socket buildkit.service", check=False
    )
    assert verify.returncode == 0 and "Unknown key" not in verify.stderr, verify.stderr
    socket = unit_state(host, "buildkit.socket")
    assert (socket["UnitFileState"], socket["ActiveState"]) == ("enabled", "active")
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"  # not started eagerly
    assert host.run("stat -c '%F %a %U:%G' /run/buildkit/buildkitd.sock").stdout == "socket 660 root:root\n"

    labels = client_call(host)

    assert labels["org.mobyproject.buildkit.worker.containerd.address"] == "/run/containerd/containerd.sock"
    assert labels["org.mobyproject.buildkit.worker.containerd.namespace"] == "default"
    check, start = buildkit_starts(host)  # the deploy's check (stopped again), then this client
    assert check["argv"] == start["argv"]
    assert start["argv"][:2] == ["--addr", "fd://"] and start["listen_fds"] == "1"
    service = unit_state(host, "buildkit.service")
    assert service["ActiveState"] == "active" and service["MainPID"] == str(start["pid"])
    assert host.run("/usr/local/bin/nerdctl info").stdout.startswith(
        "address=/run/containerd/containerd.sock\nnamespace=default\n"
    )

    before = (mtimes(host), unit_state(host, "buildkit.socket"), unit_state(host, "buildkit.service"))
    assert plan(hosts, data) == {}
    rerun = run_pyinfra(hosts, DEPLOY, data=data, as_json=True)
    assert rerun.returncode == 0, rerun.output
    assert rerun.json["results"]["totals"]["success"] == 0, rerun.stdout
    assert (mtimes(host), unit_state(host, "buildkit.socket"), unit_state(host, "buildkit.service")) == before
    assert mirror.fetched("/containerd/nerdctl/releases/download/v2.4.0/nerdctl-2.4.0") == [
        "/containerd/nerdctl/releases/download/v2.4.0/nerdctl-2.4.0-linux-amd64.tar.gz"
    ]


def test_k3s_containerd_with_socket_group(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    start_k3s_containerd(host)
    hosts = inventory(
        [host],
        **deploy_data(mirror),
        containerd_address="unix:///run/k3s/containerd/containerd.sock",
        containerd_namespace="k8s.io",
        buildkit_socket_group="buildkit",
        nerdctl_docker_alias=True,
    )

    run = run_pyinfra(hosts, DEPLOY)

    assert run.returncode == 0, run.output
    assert host.run("stat -c '%F %a %U:%G' /run/buildkit/buildkitd.sock").stdout == "socket 660 root:buildkit\n"
    labels = client_call(host)
    assert labels["org.mobyproject.buildkit.worker.containerd.address"] == "/run/k3s/containerd/containerd.sock"
    assert labels["org.mobyproject.buildkit.worker.containerd.namespace"] == "k8s.io"
    assert (
        "After=buildkit.socket containerd.service k3s.service"
        in host.run("cat /etc/systemd/system/buildkit.service").stdout
    )
    info = host.run("/usr/local/bin/nerdctl info").stdout
    assert info.startswith("address=unix:///run/k3s/containerd/containerd.sock\nnamespace=k8s.io\n")
    assert host.run("bash -lc 'alias docker'").stdout.strip() == "alias docker='/usr/local/bin/nerdctl'"
    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.BuildkitSocket", as_json=True)
    assert facts.json["pyinfra_nerdctl.facts.BuildkitSocket"][host.name] == {
        "enabled": True,
        "active": True,
        "path": "/run/buildkit/buildkitd.sock",
        "exists": True,
        "is_socket": True,
        "mode": "660",
        "user": "root",
        "group": "buildkit",
    }
    assert plan(hosts, {}) == {}


def test_changes_restart_exactly_what_depends_on_them(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host])
    data = deploy_data(mirror, nerdctl_version="2.4.0", buildkit_version="0.12.5")
    deploy(hosts, data)
    client_call(host)
    socket_before = unit_state(host, "buildkit.socket")
    service_before = unit_state(host, "buildkit.service")

    # A new nerdctl touches no service.
    data = {**data, "nerdctl_version": "2.4.1"}
    assert plan(hosts, data) == {
        host.name: [
            "Install the nerdctl and BuildKit build host | Install nerdctl 2.4.1 into /usr/local/bin"
        ]
    }
    deploy(hosts, data)
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.1\n"
    assert (unit_state(host, "buildkit.socket"), unit_state(host, "buildkit.service")) == (
        socket_before,
        service_before,
    )

    # A new BuildKit restarts the running service, not the socket.
    data = deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0")
    assert [op.split(" | ")[1] for op in plan(hosts, data)[host.name]] == [
        "Install BuildKit 0.13.0 into /usr/local/bin",
        "Wait for the builds in flight on buildkit.service",  # it runs: its builds are waited for (#18)
        "Restart buildkit.service",
        "Check that BuildKit answers with the containerd worker",
    ]
    deploy(hosts, data)
    service = unit_state(host, "buildkit.service")
    assert service["ActiveState"] == "active" and service["InvocationID"] != service_before["InvocationID"]
    assert unit_state(host, "buildkit.socket") == socket_before
    assert client_call(host)["buildkitd.version"] == "0.13.0"
    assert "buildkit-cni-bridge" in host.run("ls /usr/local/bin").stdout

    # A downgrade while the service is stopped leaves it stopped (the check starts it and stops it
    # again) and removes files 0.12 lacks.
    host.run("systemctl stop buildkit.service")
    data = deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.12.5")
    deploy(hosts, data)
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"
    assert "cni" not in host.run("ls /usr/local/bin").stdout
    assert len(buildkit_starts(host)) == 4  # first check, client, restart, this check

    # A config change restarts the running service once; the socket keeps running.
    client_call(host)
    service_before = unit_state(host, "buildkit.service")
    data = {**data, "containerd_namespace": "builds"}
    deploy(hosts, data)
    assert unit_state(host, "buildkit.service")["InvocationID"] != service_before["InvocationID"]
    assert unit_state(host, "buildkit.socket") == socket_before
    assert buildkit_starts(host)[-1]["worker"]["namespace"] == "builds"
    assert len(buildkit_starts(host)) == 6  # a client, then the restart

    # A socket group change reloads units and restarts the socket (and with it the service).
    data = {**data, "buildkit_socket_group": "builders"}
    assert [op.split(" | ")[1] for op in plan(hosts, data)[host.name]] == [
        "Group builders",
        "Write /etc/systemd/system/buildkit.socket",
        "Wait for the builds in flight on buildkit.service",  # it runs: its builds are waited for (#18)
        "Reload systemd units",
        "Restart buildkit.socket",
        "Check that BuildKit answers with the containerd worker",
    ]
    deploy(hosts, data)
    assert unit_state(host, "buildkit.socket")["InvocationID"] != socket_before["InvocationID"]
    assert host.run("stat -c '%a %G' /run/buildkit/buildkitd.sock").stdout == "660 builders\n"
    assert client_call(host)["org.mobyproject.buildkit.worker.containerd.namespace"] == "builds"
    assert plan(hosts, data) == {}


LIBRARY_DEPLOY = """
from pyinfra_nerdctl.deploys import install_build_host, install_nerdctl

install_nerdctl(nerdctl_version="{nerdctl}", containerd_namespace="from-kwargs", _sudo=True)
install_build_host(
    github_url="{url}",
    nerdctl_version="{nerdctl}",
    buildkit_version="0.12.5",
    buildkit_sha256="{buildkit_sha256}",
    containerd_namespace="from-kwargs",
    bin_dir="/opt/build/bin",
    _sudo=True,
)
"""


def test_library_use_with_keywords_and_sudo(boot_hosts, mirror, tmp_path):
    host = boot_containerd_host(boot_hosts)
    data = deploy_data(mirror)
    deploy_file = tmp_path / "build_hosts.py"
    deploy_file.write_text(
        LIBRARY_DEPLOY.format(url=mirror.url, nerdctl="2.4.0", buildkit_sha256=data["buildkit_sha256"])
    )
    hosts = [(host.name, {**host.inventory_data(), "ssh_user": testhosts.OPERATOR, "github_url": mirror.url})]

    run = run_pyinfra(hosts, str(deploy_file))

    assert run.returncode == 0, run.output
    assert host.run("/opt/build/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"
    assert host.run("stat -c '%U:%G' /opt/build/bin/buildkitd").stdout == "root:root\n"
    assert (
        "ExecStart=/opt/build/bin/buildkitd --addr fd://" in host.run("cat /etc/systemd/system/buildkit.service").stdout
    )
    assert client_call(host, "/opt/build/bin")["org.mobyproject.buildkit.worker.containerd.namespace"] == "from-kwargs"
    rerun = run_pyinfra(hosts, str(deploy_file), as_json=True)
    assert rerun.json["results"]["totals"]["success"] == 0, rerun.output


def test_example_inventory_drives_the_quick_start_deploy(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    run = run_pyinfra(
        [],
        DEPLOY,
        data={**deploy_data(mirror), "ssh_known_hosts_file": "/dev/null"},
        inventory_path=testhosts.PROJECT_ROOT / "inventories" / "example.py",
        env={"BUILD_HOSTS": host.address},
        extra_args=("--key", str(testhosts.test_key())),
    )

    assert run.returncode == 0, run.output
    assert host.run("stat -c '%a %G' /run/buildkit/buildkitd.sock").stdout == "660 buildkit\n"
