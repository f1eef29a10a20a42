"""nerdctl_flavor="full": a bare systemd host becomes a containerd build host from one archive."""

from __future__ import annotations

import json

import mirror as mirror_module
import pytest
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, buildkit_starts, client_call, deploy, plan, unit_state
from pyinfra_cli import run_pyinfra

pytestmark = pytest.mark.hosts


def full_data(mirror, version: str = "2.4.0", **data) -> dict:
    return deploy_data(mirror, nerdctl_version=version, nerdctl_flavor="full", **data)


def containerd_starts(host) -> list[dict]:
    out = host.run("cat /run/containerd-standin/starts.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in out.splitlines()]


def files_under(host, *paths: str) -> set[str]:
    """Files and symbolic links below ``paths``."""
    return set(host.run(f"find {' '.join(paths)} \\( -type f -o -type l \\) 2>/dev/null | sort").stdout.split())


def test_bare_host_becomes_a_build_host_and_a_rerun_changes_nothing(boot_hosts, mirror):
    (host,) = boot_hosts(1)  # bookworm: no containerd at all
    assert host.run("test -e /run/containerd/containerd.sock", check=False).returncode == 1
    hosts = inventory([host], **full_data(mirror, containerd_config={"version": 2, "root": "/var/lib/containerd"}))

    deploy(hosts, {})

    assert unit_state(host, "containerd.service")["ActiveState"] == "active"
    assert unit_state(host, "containerd.service")["UnitFileState"] == "enabled"
    assert containerd_starts(host)[-1]["config"] == {"version": 2, "root": "/var/lib/containerd"}
    assert host.run("stat -c %F /run/containerd/containerd.sock").stdout == "socket\n"
    # Our socket-activated unit wins over the archive's eager buildkit.service.
    assert host.run("systemctl show -p FragmentPath --value buildkit.service").stdout.strip() == (
        "/etc/systemd/system/buildkit.service"
    )
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"
    assert client_call(host)["org.mobyproject.buildkit.worker.containerd.address"] == "/run/containerd/containerd.sock"
    assert buildkit_starts(host)[-1]["version"] == "0.23.2"  # the archive's BuildKit
    assert 'cni_path = "/usr/local/libexec/cni"' in host.run("cat /etc/nerdctl/nerdctl.toml").stdout
    assert host.run("/usr/local/bin/nerdctl info").stdout.startswith("address=/run/containerd/containerd.sock")
    assert files_under(host, "/usr/local/libexec/cni") >= {"/usr/local/libexec/cni/bridge"}
    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.NerdctlFull", as_json=True)
    assert facts.json["pyinfra_nerdctl.facts.NerdctlFull"][host.name] == {
        "version": "2.4.0",
        "components": dict((name, value[1:]) for name, value in mirror_module.full_component_versions("2.4.0").items()),
        "containerd_active": True,
    }
    assert plan(hosts, {}) == {}
    rerun = run_pyinfra(hosts, DEPLOY, as_json=True)
    assert rerun.json["results"]["totals"]["success"] == 0, rerun.output


def test_full_upgrade_restarts_containerd_and_removal_takes_exactly_its_files(boot_hosts, mirror):
    (host,) = boot_hosts(1)
    before = files_under(host, "/usr/local", "/opt")
    prefix = {"full_prefix": "/opt/nerdctl"}
    hosts = inventory([host], **full_data(mirror, **prefix))
    deploy(hosts, {})
    client_call(host, "/opt/nerdctl/bin")
    containerd = unit_state(host, "containerd.service")
    assert "Environment=PATH=/opt/nerdctl/bin:" in host.run("cat /etc/systemd/system/containerd.service").stdout

    deploy(hosts, full_data(mirror, "2.4.1", **prefix))

    assert unit_state(host, "containerd.service")["InvocationID"] != containerd["InvocationID"]
    assert containerd_starts(host)[-1]["version"] == "2.1.1"
    assert host.run("/opt/nerdctl/bin/nerdctl --version").stdout == "nerdctl version 2.4.1\n"
    assert host.run("readlink /opt/nerdctl/bin/buildkit-cni-bridge").stdout == "../libexec/cni/bridge\n"
    assert plan(hosts, full_data(mirror, "2.4.1", **prefix)) == {}
    refused = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.install_nerdctl", data={"nerdctl_flavor": "minimal"})
    assert refused.returncode != 0 and "this host runs the nerdctl-full flavor" in refused.output, refused.output

    removal = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_build_host", data=full_data(mirror, "2.4.1", **prefix))

    assert removal.returncode == 0, removal.output
    assert files_under(host, "/usr/local", "/opt") == before
    assert unit_state(host, "containerd.service")["ActiveState"] == "inactive"
    assert host.run("test -e /etc/systemd/system/containerd.service", check=False).returncode == 1


def test_switching_minimal_to_full_and_back_leaves_no_leftovers(boot_hosts, mirror):
    (host,) = boot_hosts(1)
    before = files_under(host, "/usr/local")
    start_fake_containerd = (
        'python3 -c \'import socket,os; os.makedirs("/run/containerd", exist_ok=True); '
        's=socket.socket(socket.AF_UNIX); s.bind("/run/containerd/containerd.sock")\''
    )
    host.run(start_fake_containerd)
    minimal = deploy_data(mirror)
    hosts = inventory([host])
    deploy(hosts, minimal)
    minimal_files = files_under(host, "/usr/local")

    deploy(hosts, full_data(mirror))

    full_files = files_under(host, "/usr/local")
    assert "/usr/local/bin/buildkit-runc" not in full_files  # minimal BuildKit's own file, retired
    for binary in ("nerdctl", "buildkitd", "buildctl", "containerd"):  # one copy on PATH, not two
        assert host.run(f"which -a {binary} | wc -l").stdout == "1\n", binary
    assert client_call(host)["buildkitd.version"] == "0.23.2"
    assert plan(hosts, full_data(mirror)) == {}

    deploy(hosts, minimal)

    assert files_under(host, "/usr/local") == minimal_files
    assert host.run("test -e /etc/systemd/system/containerd.service", check=False).returncode == 1
    assert client_call(host)["buildkitd.version"] == "0.12.5"
    assert plan(hosts, minimal) == {}
    assert before <= minimal_files
