"""Hosts that real fleets have (issue 15): systemd 247, a German system locale, SSH sessions with umask 077.

On each, a rerun after an install and after an upgrade changes nothing, ten times in a row.
"""

from __future__ import annotations

import mirror as mirror_module
import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, boot_build_host, client_call, deploy, plan, unit_state
from pyinfra_cli import run_pyinfra

pytestmark = pytest.mark.hosts

RERUNS = 10
REMOVE = "pyinfra_nerdctl.deploys.remove_build_host"
KINDS = {
    "debian11": (testhosts.BULLSEYE, "systemctl --version | head -n1", "systemd 247"),
    "german": (testhosts.BOOKWORM_GERMAN, "stat -c %F /etc", "Verzeichnis"),
    "umask077": (testhosts.BOOKWORM_UMASK, "umask", "0077"),
}


def boot_kind(boot_hosts, kind: str) -> testhosts.TestHost:
    image, probe, expected = KINDS[kind]
    host = boot_build_host(boot_hosts, image)
    assert expected in host.run(probe).stdout  # the host is what the test claims it is
    return host


def assert_reruns_change_nothing(hosts, data) -> None:
    for attempt in range(RERUNS):
        rerun = run_pyinfra(hosts, DEPLOY, data=data, as_json=True)
        assert rerun.returncode == 0, rerun.output
        assert rerun.changes_made() == {}, (attempt, rerun.changes_made())


def test_install_upgrade_and_removal_converge_and_reruns_change_nothing(boot_hosts, mirror):
    # One fleet of one host of each kind: pyinfra runs them side by side, so the loops cost one host's time.
    fleet = [boot_kind(boot_hosts, kind) for kind in KINDS]
    hosts = inventory(fleet)
    first = deploy_data(mirror)

    deploy(hosts, first)
    assert_reruns_change_nothing(hosts, first)
    running = {}
    for host in fleet:
        assert client_call(host)["buildkitd.version"] == "0.12.5"
        running[host.name] = unit_state(host, "buildkit.service")["InvocationID"]

    upgrade = deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0")
    deploy(hosts, upgrade)

    for host in fleet:
        assert unit_state(host, "buildkit.service")["InvocationID"] != running[host.name], host.name
    assert_reruns_change_nothing(hosts, upgrade)
    for host in fleet:
        assert client_call(host)["buildkitd.version"] == "0.13.0"

    removal = run_pyinfra(hosts, REMOVE, as_json=True)

    assert removal.returncode == 0, removal.output
    for host in fleet:
        assert not host.run("ls -A /usr/local/bin").stdout, host.name
        assert host.run("find /var/lib/pyinfra-nerdctl -name '*.files'").stdout == "", host.name
        for path in ("/etc/buildkit", "/etc/nerdctl", "/etc/systemd/system/buildkit.socket"):
            assert host.run(f"test -e {path}", check=False).returncode == 1, (host.name, path)
    again = run_pyinfra(hosts, REMOVE, as_json=True)
    assert again.returncode == 0 and again.changes_made() == {}, again.output


def test_umask_077_group_member_runs_buildctl_from_a_new_bin_dir_and_reruns_repair_modes(boot_hosts, mirror):
    host = boot_kind(boot_hosts, "umask077")
    assert host.run("ls -A /srv").stdout == ""  # Debian ships /srv empty: it must outlive the removal
    hosts = inventory([host], **deploy_data(mirror, bin_dir="/srv/tools/bin", buildkit_socket_group="builders"))
    user = testhosts.OPERATOR
    host.run(f"groupadd --system builders && usermod -a -G builders {user}")

    deploy(hosts, {})

    assert "containerd" in host.run(f"su {user} -c '/srv/tools/bin/buildctl debug workers'").stdout
    assert host.run(f"su {user} -c '/srv/tools/bin/nerdctl --version'").stdout == "nerdctl version 2.4.0\n"
    state = "/var/lib/pyinfra-nerdctl"  # root's own (0700), made so whatever the umask
    listed = f"/srv/tools /srv/tools/bin {state} {state}/*.files {state}/created-folders"
    assert host.run(f"stat -c '%n %a %U:%G' {listed}").stdout.splitlines() == [
        "/srv/tools 755 root:root",
        "/srv/tools/bin 755 root:root",
        f"{state} 700 root:root",
        f"{state}/buildkit@_srv_tools_bin.files 644 root:root",
        f"{state}/nerdctl@_srv_tools_bin.files 644 root:root",
        f"{state}/created-folders 644 root:root",
    ]
    assert host.run(f"cat {state}/created-folders").stdout == "/srv/tools\n/srv/tools/bin\n"
    assert_reruns_change_nothing(hosts, {})

    host.run("chmod 700 /srv/tools && chgrp staff /srv/tools/bin")  # as an install before this fix left it, say
    assert "Modes of the folders the install made" in " ".join(plan(hosts, {})[host.name])
    deploy(hosts, {})
    assert host.run("stat -c '%a %U:%G' /srv/tools /srv/tools/bin").stdout == "755 root:root\n755 root:root\n"
    assert plan(hosts, {}) == {}

    removal = run_pyinfra(hosts, REMOVE)

    assert removal.returncode == 0, removal.output
    assert host.run("test -e /srv/tools", check=False).returncode == 1
    assert host.run("ls -A /srv").stdout == ""


def test_umask_077_full_flavor_folders_are_readable_and_odd_names_stay_whole(boot_hosts, mirror):
    (host,) = boot_hosts(1, image=testhosts.BOOKWORM_UMASK)
    before = host.run("find /opt /usr/local | sort").stdout
    hosts = inventory([host], **deploy_data(mirror, nerdctl_flavor="full", full_prefix="/opt/nerdctl"))

    deploy(hosts, {})

    assert host.run("find /opt/nerdctl -type d ! -perm 755").stdout == ""
    assert host.run("find /opt/nerdctl -type f ! -perm 755 ! -perm 644").stdout == ""
    for folder in ("libexec/cni", "lib/systemd/system", "share/doc/nerdctl-full/odd names"):
        assert host.run(f"stat -c '%a %U:%G' '/opt/nerdctl/{folder}'").stdout == "755 root:root\n", folder
    odd = f"/opt/nerdctl/{mirror_module.ODD_MEMBER}"
    assert host.run(f"cat '{odd}'").stdout == "one file, one name\n"
    assert host.run(f"su {testhosts.OPERATOR} -c '/opt/nerdctl/bin/nerdctl --version'").returncode == 0
    assert client_call(host, "/opt/nerdctl/bin")["buildkitd.version"] == "0.23.2"
    assert plan(hosts, {}) == {}

    removal = run_pyinfra(hosts, REMOVE, data=deploy_data(mirror, nerdctl_flavor="full", full_prefix="/opt/nerdctl"))

    assert removal.returncode == 0, removal.output
    assert host.run("find /opt /usr/local | sort").stdout == before
