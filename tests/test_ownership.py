"""Only what this package installed is touched, and one host that cannot be read fails alone."""

from __future__ import annotations

import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, client_call, deploy, unit_state
from pyinfra_cli import run_pyinfra
from test_full import full_data

pytestmark = pytest.mark.hosts

REMOVE = "pyinfra_nerdctl.deploys.remove_build_host"
# An operator's own containerd unit at the path the full flavor uses: no marker, so not ours.
OPERATOR_CONTAINERD = """[Unit]
Description=the operator's own containerd
[Service]
ExecStart=/usr/bin/containerd
Type=notify
[Install]
WantedBy=multi-user.target
"""


def test_full_to_minimal_with_a_new_full_prefix_retires_our_containerd_unit(boot_hosts, mirror):
    (host,) = boot_hosts(1)
    hosts = inventory([host])
    deploy(hosts, full_data(mirror, full_prefix="/opt/full"))
    assert unit_state(host, "containerd.service")["ActiveState"] == "active"

    # The unit was rendered from /opt/full; the settings now name another prefix.
    deploy(hosts, deploy_data(mirror, full_prefix="/opt/elsewhere"))

    assert host.run("test -e /etc/systemd/system/containerd.service", check=False).returncode == 1
    containerd = unit_state(host, "containerd.service")
    assert (containerd["ActiveState"], containerd.get("UnitFileState")) != ("active", "enabled")
    assert host.run("test -e /opt/full", check=False).returncode == 1  # the install made it: it goes, empty


def test_removal_with_full_in_host_data_keeps_an_operators_containerd_unit(boot_hosts, mirror):
    host = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)[0]
    host.run(
        f"cat > /etc/systemd/system/containerd.service <<'EOF'\n{OPERATOR_CONTAINERD}EOF\n"
        "systemctl daemon-reload && systemctl enable containerd.service && systemctl restart containerd.service"
    )
    hosts = inventory([host], nerdctl_flavor="full")

    removal = run_pyinfra(hosts, REMOVE, as_json=True)

    assert removal.returncode == 0, removal.output
    assert removal.json["results"]["totals"]["success"] == 0, removal.changes_made()
    state = unit_state(host, "containerd.service")
    assert (state["ActiveState"], state["UnitFileState"]) == ("active", "enabled")
    assert host.run("cat /etc/systemd/system/containerd.service").stdout == OPERATOR_CONTAINERD


def test_removal_without_a_file_list_keeps_binaries_it_did_not_install(boot_hosts, mirror):
    (host,) = boot_hosts(1)
    host.run("printf '#!/bin/sh\\necho mine\\n' > /usr/local/bin/nerdctl && chmod 755 /usr/local/bin/nerdctl")
    host.run("cp /usr/local/bin/nerdctl /usr/local/bin/buildctl && mkdir -p /srv/tools/bin")
    hosts = inventory([host])

    for deploy_name in ("remove_nerdctl", "remove_buildkit", "remove_build_host"):
        run = run_pyinfra(hosts, f"pyinfra_nerdctl.deploys.{deploy_name}", as_json=True)
        assert run.returncode == 0, run.output
        assert run.json["results"]["totals"]["success"] == 0, (deploy_name, run.changes_made())

    assert host.run("/usr/local/bin/nerdctl; /usr/local/bin/buildctl").stdout == "mine\nmine\n"


def test_full_flavor_host_refuses_piecewise_removal(boot_hosts, mirror):
    (host,) = boot_hosts(1)
    hosts = inventory([host])
    deploy(hosts, full_data(mirror))
    before = host.run("/usr/local/bin/nerdctl --version && ls /etc/nerdctl").stdout

    run = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_nerdctl")

    assert run.returncode != 0
    assert f"{host.name}: this host runs the nerdctl-full flavor: remove it with remove_build_host" in run.output
    assert host.run("/usr/local/bin/nerdctl --version && ls /etc/nerdctl").stdout == before


def fail_fact_commands(host: testhosts.TestHost) -> None:
    """From now on, sshd runs every command but the state fact's, which fails as on a broken host."""
    host.run(
        "cat > /usr/local/sbin/failing-facts <<'EOF'\n#!/bin/sh\n"
        'case "$SSH_ORIGINAL_COMMAND" in *full_managed*) echo "simulated fault" >&2; exit 1;; esac\n'
        'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\nEOF\nchmod 755 /usr/local/sbin/failing-facts'
    )
    with open(host.workdir / "sshd.d" / "test.conf", "a") as config:
        config.write("ForceCommand /usr/local/sbin/failing-facts\n")
    host.run("systemctl reload ssh")


def test_a_host_whose_state_cannot_be_read_fails_alone(boot_hosts, mirror):
    good, broken = boot_hosts(2, image=testhosts.TRIXIE_CONTAINERD)
    fail_fact_commands(broken)
    listing = broken.run("find /usr/local /etc -newer /etc/os-release 2>/dev/null | sort").stdout

    run = run_pyinfra(inventory([good, broken], **deploy_data(mirror)), DEPLOY, as_json=True)

    assert run.returncode != 0
    assert "Traceback" not in run.output and "TypeError" not in run.output, run.output
    assert f"{broken.name}: could not read the host's state" in run.output
    assert run.json["results"]["failed_hosts"] == [broken.name]
    assert client_call(good)["buildkitd.version"] == "0.12.5"
    assert broken.run("find /usr/local /etc -newer /etc/os-release 2>/dev/null | sort").stdout == listing
