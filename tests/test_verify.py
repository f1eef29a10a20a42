"""A run that proves the host can build, and the config settings, with the stand-in BuildKit.

The same paths run against the real daemon in test_real_buildkit.py when a real archive is at hand.
"""

from __future__ import annotations

import json

import pytest
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, boot_containerd_host, buildkit_starts, client_call, deploy, unit_state
from mirror import UNRUNNABLE_BUILDKIT
from pyinfra_cli import run_pyinfra
from test_safety import converged_host, host_state

pytestmark = pytest.mark.hosts

CHECK = "Check that BuildKit answers with the containerd worker"
# Well-typed, so the settings checks pass it; the daemon refuses it (no CNI bridge plugin there).
REFUSED = json.dumps({"worker": {"containerd": {"networkMode": "cni", "cniBinaryPath": "/no/such/cni"}}})
FIXED = json.dumps({"worker": {"containerd": {"gc": True, "maxUsedSpace": "2GB"}}})


def error_line(output: str, host_name: str, message: str) -> str:
    """The one line of ``output`` that names the host and holds ``message``."""
    lines = [line for line in output.splitlines() if message in line and host_name in line]
    assert len(lines) == 1, output
    return lines[0]


def test_missing_containerd_warns_and_the_check_waits_for_it(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host], **deploy_data(mirror), containerd_address="/run/k3s/containerd/containerd.sock")

    run = run_pyinfra(hosts, DEPLOY)

    assert run.returncode == 0, run.output
    error_line(
        run.output,
        host.name,
        "containerd socket /run/k3s/containerd/containerd.sock does not exist (containerd_address="
        "/run/k3s/containerd/containerd.sock): containerd or k3s is not installed or not running",
    )
    assert buildkit_starts(host) == []  # no check: it could not have worked
    rerun = run_pyinfra(hosts, DEPLOY, as_json=True)
    assert rerun.json["results"]["totals"]["success"] == 0, rerun.output


def test_refused_config_comes_back_and_a_fixed_one_converges(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host], **deploy_data(mirror))

    # A first install that cannot work fails the run with buildkitd's own words.
    run = run_pyinfra(hosts, DEPLOY, data={"buildkitd_config": REFUSED})
    assert run.returncode != 0
    assert "BuildKit did not answer with the containerd worker in namespace default" in run.output, run.output
    assert "failed to find CNI bridge in /no/such/cni" in run.output

    # Fixed: converges, no reset-failed by hand; the check stops the daemon it started.
    run = run_pyinfra(hosts, DEPLOY, data={"buildkitd_config": FIXED}, as_json=True)
    assert run.returncode == 0, run.output
    assert any(CHECK in name for name in run.changes_made()[host.name])
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"
    working = host.run("cat /etc/buildkit/buildkitd.toml").stdout
    assert buildkit_starts(host)[-1]["worker"]["namespace"] == "default"
    client_call(host)
    running = unit_state(host, "buildkit.service")

    # Refused on a working host: the working config comes back and BuildKit answers again.
    run = run_pyinfra(hosts, DEPLOY, data={"buildkitd_config": REFUSED})

    assert run.returncode != 0
    line = error_line(run.output, host.name, "buildkitd refused the new /etc/buildkit/buildkitd.toml")
    assert "BuildKit works again with the previous ones" in line, run.output
    assert "failed to find CNI bridge" in run.output  # from the journal
    assert host.run("cat /etc/buildkit/buildkitd.toml").stdout == working
    assert unit_state(host, "buildkit.service")["ActiveState"] == "active"  # running before, running after
    assert unit_state(host, "buildkit.service")["InvocationID"] != running["InvocationID"]
    assert client_call(host)["org.mobyproject.buildkit.worker.containerd.namespace"] == "default"

    # With the check off, a refused config lands: the restart fails and nothing goes back, BuildKit
    # stops answering (its units end failed). The next checked run repairs it.
    run = run_pyinfra(hosts, DEPLOY, data={"buildkitd_config": REFUSED, "buildkit_verify": "false"})
    assert run.returncode != 0
    assert "Job for buildkit.service failed" in run.output and CHECK not in run.output, run.output
    assert "cniBinaryPath" in host.run("cat /etc/buildkit/buildkitd.toml").stdout
    assert host.run("/usr/local/bin/buildctl debug workers -v", check=False).returncode != 0
    run = run_pyinfra(hosts, DEPLOY, data={"buildkitd_config": FIXED})
    assert run.returncode == 0, run.output
    assert client_call(host)["org.mobyproject.buildkit.worker.executor"] == "containerd"
    rerun = run_pyinfra(hosts, DEPLOY, data={"buildkitd_config": FIXED}, as_json=True)
    assert rerun.json["results"]["totals"]["success"] == 0, rerun.output


def test_refused_binary_comes_back_and_workers_fact_reports(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.BuildkitWorkers", as_json=True)
    (workers,) = facts.json.values()
    assert workers[host.name] == [
        {
            "id": workers[host.name][0]["id"],
            "executor": "containerd",
            "namespace": "default",
            "platforms": ["linux/amd64", "linux/amd64/v2"],
        }
    ]

    run = run_pyinfra(hosts, DEPLOY, data=deploy_data(mirror, buildkit_version=UNRUNNABLE_BUILDKIT))

    assert run.returncode != 0
    error_line(run.output, host.name, "buildkitd refused the new /usr/local/bin/buildkitd")
    assert "v3 microarchitecture" in run.output  # buildkitd's own words, from the journal
    assert host.run("/usr/local/bin/buildkitd --version").stdout.startswith(
        "buildkitd github.com/moby/buildkit v0.12.5"
    )
    assert client_call(host)["buildkitd.version"] == "0.12.5"

    host.run("systemctl stop buildkit.service buildkit.socket")
    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.BuildkitWorkers", as_json=True)
    assert list(facts.json.values())[0][host.name] is None  # nothing answers
    deploy(hosts, deploy_data(mirror, buildkit_version="0.13.0"))
    assert client_call(host)["buildkitd.version"] == "0.13.0"


def test_config_changes_restart_only_what_reads_them(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    service = unit_state(host, "buildkit.service")

    deploy(hosts, {"nerdctl_config": json.dumps({"experimental": True, "hosts_dir": ["/etc/containerd/certs.d"]})})

    assert "experimental = true" in host.run("cat /etc/nerdctl/nerdctl.toml").stdout
    assert unit_state(host, "buildkit.service") == service

    config = {"registry": {"docker.io": {"mirrors": ["mirror.internal"]}}, "history": {"maxEntries": 5}}
    deploy(hosts, {"buildkitd_config": json.dumps(config)})

    restarted = unit_state(host, "buildkit.service")
    assert restarted["ActiveState"] == "active" and restarted["InvocationID"] != service["InvocationID"]
    assert buildkit_starts(host)[-1]["config"].count('[registry."docker.io"]') == 1


BAD_CONFIG = [
    (
        {"buildkitd_config": '{"worker": {"containerd": {"gc": "yes"}}}'},
        "worker.containerd.gc='yes' must be true or false",
    ),
    (
        {"buildkitd_config": '{"worker": {"containerd": {"namespace": "builds"}}}'},
        "buildkitd_config: worker.containerd.namespace is set by this package: use containerd_namespace",
    ),
    ({"buildkitd_config": '{"grpc": {"gid": 1000}}'}, "use buildkit_socket_group"),
    ({"buildkitd_config": "gc=true"}, "buildkitd_config='gc=true' is neither a dict nor JSON of one"),
    ({"buildkitd_config": '{"insecure-entitlements": ["bogus"]}'}, "insecure-entitlements=['bogus'] must be a list of"),
    (
        {"buildkitd_config": '{"worker": {"containerd": {"gcpolicy": {"all": true}}}}'},
        "worker.containerd.gcpolicy={'all': True} must be a list of tables",
    ),
    (
        {"buildkitd_config": '{"registry": {"docker.io": {"mirrors": "mirror.internal"}}}'},
        "registry.\"docker.io\".mirrors='mirror.internal' must be a list of strings",
    ),
    ({"nerdctl_config": '{"address": "unix:///run/x.sock"}'}, "nerdctl_config: address is set by this package"),
    ({"nerdctl_config": '{"experimental": "yes"}'}, "nerdctl_config: experimental='yes' must be true or false"),
    ({"buildkit_verify": "maybe"}, "buildkit_verify='maybe' is not a yes/no value"),
]


def test_bad_config_values_are_one_line_errors_and_the_host_is_untouched(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    before = host_state(host)

    for change, message in BAD_CONFIG:
        run = run_pyinfra([(host.name, {**hosts[0][1], **change})], DEPLOY)
        assert run.returncode != 0, change
        error_line(run.output, host.name, message)
        assert host_state(host) == before, change

    # A misspelt key is only a warning (buildkitd would ignore it), naming the key meant.
    run = run_pyinfra(hosts, DEPLOY, data={"buildkitd_config": '{"worker": {"containerd": {"gckeepstorge": "1GB"}}}'})
    assert run.returncode == 0, run.output
    error_line(run.output, host.name, "unknown key worker.containerd.gckeepstorge (did you mean gckeepstorage?)")


def test_buildkitd_sees_bin_dir_first_on_its_path(boot_hosts, mirror):
    minimal = boot_containerd_host(boot_hosts)
    (full,) = boot_hosts(1)  # bookworm: the full archive brings containerd
    entries = inventory([minimal], **deploy_data(mirror, bin_dir="/opt/buildkit/bin"))
    entries += inventory([full], **deploy_data(mirror, nerdctl_flavor="full", full_prefix="/opt/nerdctl"))

    run = run_pyinfra(entries, DEPLOY)

    assert run.returncode == 0, run.output
    for host, bin_dir in ((minimal, "/opt/buildkit/bin"), (full, "/opt/nerdctl/bin")):
        client_call(host, bin_dir)
        pid = unit_state(host, "buildkit.service")["MainPID"]
        path = host.run(f"tr '\\0' '\\n' < /proc/{pid}/environ | grep ^PATH=").stdout.strip()
        assert path.startswith(f"PATH={bin_dir}:"), (host.name, path)
