"""A deploy never fights the builds (#18): builds in flight are waited for, never killed.

The real-BuildKit tests need a real release archive (``PYINFRA_NERDCTL_REAL_BUILDKIT``); without it they skip.
A ``RUN`` step that sleeps holds a real build (Debian's static busybox in a ``FROM scratch`` image).
"""

from __future__ import annotations

import json
import time

import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, boot_containerd_host, buildkit_starts, client_call, unit_state
from pyinfra_cli import run_pyinfra
from test_fleet import CONVERGED_COMMANDS_PER_HOST, remote_commands
from test_real_buildkit import boot_build_host, real_data

pytestmark = pytest.mark.hosts

BUILDCTL = "/usr/local/bin/buildctl"
CHECK = "Check that BuildKit answers with the containerd worker"
MIRROR_CONFIG = json.dumps({"registry": {"docker.io": {"mirrors": ["127.0.0.1:5999"]}}})


def start_build(host: testhosts.TestHost, seconds: int) -> None:
    """A build whose RUN step sleeps ``seconds``, in the background; its exit status lands in /root/build.rc."""
    host.run(
        "mkdir -p /root/ctx && cd /root/ctx && cp /bin/busybox busybox && rm -f /root/build.rc && "
        f"printf 'FROM scratch\\nCOPY busybox /bin/busybox\\nRUN [\"/bin/busybox\", \"sleep\", \"{seconds}\"]\\n' "
        "> Dockerfile"
    )
    # A transient unit of its own: ssh would wait for a background job of its session.
    host.run(
        "systemd-run --quiet --collect --working-directory=/root/ctx sh -c '"
        f"{BUILDCTL} build --no-cache --frontend dockerfile.v0 --local context=. --local dockerfile=. "
        "> /root/build.log 2>&1; echo $? > /root/build.rc'"
    )
    deadline = time.monotonic() + 60
    while not running_builds(host):
        assert time.monotonic() < deadline, host.run("cat /root/build.log", check=False).stdout
        time.sleep(1)
    time.sleep(3)  # into the RUN step


def running_builds(host: testhosts.TestHost) -> list[dict] | None:
    facts = run_pyinfra(inventory([host]), "fact", "pyinfra_nerdctl.facts.BuildkitBuilds", as_json=True)
    assert facts.returncode == 0, facts.output
    (found,) = facts.json.values()
    return found[host.name]


def build_result(host: testhosts.TestHost, within: int) -> tuple[int, float]:
    """The build's exit status and when it ended (epoch seconds), waiting up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while host.run("test -s /root/build.rc", check=False).returncode != 0:
        assert time.monotonic() < deadline, "the build did not end in time"
        time.sleep(2)
    rc, ended = host.run("cat /root/build.rc; stat -c %Y /root/build.rc").stdout.split()
    return int(rc), float(ended)


def active_since(host: testhosts.TestHost) -> float:
    value = host.run("systemctl show -p ActiveEnterTimestampMonotonic --value buildkit.service").stdout.strip()
    uptime = float(host.run("cut -d' ' -f1 /proc/uptime").stdout.split()[0])
    now = float(host.run("date +%s.%N").stdout)
    return now - (uptime - int(value) / 1e6)


def test_a_config_change_waits_for_a_build_in_flight_then_restarts_onto_it(boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    hosts = inventory([host])
    data = real_data(mirror, real_buildkit)
    assert run_pyinfra(hosts, DEPLOY, data=data).returncode == 0
    assert running_builds(host) == []
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"  # the fact started nothing

    start_build(host, 45)
    (build,) = running_builds(host)
    assert build["ref"] and build["started"]
    changed = {**data, "buildkitd_config": MIRROR_CONFIG}
    run = run_pyinfra(hosts, DEPLOY, data=changed)

    assert run.returncode == 0, run.output
    rc, ended = build_result(host, 30)
    assert rc == 0, host.run("cat /root/build.log").stdout
    assert active_since(host) >= ended - 1  # the daemon in force started once the build was over
    assert "127.0.0.1:5999" in host.run("cat /etc/buildkit/buildkitd.toml").stdout
    rerun = run_pyinfra(hosts, DEPLOY, data=changed, as_json=True)
    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output


def test_builds_longer_than_the_drain_timeout_fail_the_host_without_harm(boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    hosts = inventory([host])
    data = real_data(mirror, real_buildkit, buildkit_drain_timeout=10)
    assert run_pyinfra(hosts, DEPLOY, data=data).returncode == 0
    start_build(host, 150)
    pid = unit_state(host, "buildkit.service")["MainPID"]

    changed = {**data, "buildkitd_config": MIRROR_CONFIG}
    started = time.monotonic()
    run = run_pyinfra(hosts, DEPLOY, data=changed)
    took = time.monotonic() - started

    assert run.returncode != 0
    assert "1 build(s) still running on buildkit.service (the oldest since" in run.output, run.output
    assert "BuildKit keeps its previous setup until a later run" in run.output
    assert took < 10 + 25, took  # the deploy's own steps, then the 10 s wait
    assert unit_state(host, "buildkit.service")["MainPID"] == pid  # neither restarted nor killed
    assert "127.0.0.1:5999" in host.run("cat /etc/buildkit/buildkitd.toml").stdout  # the new file stays

    removal = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_build_host", data=changed)
    assert removal.returncode != 0 and "1 build(s) still running" in removal.output, removal.output
    assert unit_state(host, "buildkit.service")["MainPID"] == pid
    assert host.run("test -f /etc/systemd/system/buildkit.service", check=False).returncode == 0

    dry = run_pyinfra(hosts, DEPLOY, data=changed, dry=True, as_json=True)
    planned = [name.rsplit(" | ", 1)[-1] for name in dry.changed_hosts()[host.name]]
    # The plan says the restart is still to do, after the wait.
    assert planned == ["Wait for the builds in flight on buildkit.service", "Restart buildkit.service", CHECK], planned
    rc, _ = build_result(host, 170)
    assert rc == 0, host.run("cat /root/build.log").stdout

    rerun = run_pyinfra(hosts, DEPLOY, data=changed)
    assert rerun.returncode == 0, rerun.output
    assert unit_state(host, "buildkit.service")["MainPID"] != pid
    again = run_pyinfra(hosts, DEPLOY, data=changed, as_json=True)
    assert again.returncode == 0 and again.json["results"]["totals"]["success"] == 0, again.output


# The same with the stand-in daemon, whose builds in flight a test writes to /run/buildkit-standin/builds.


def test_an_upgrade_and_a_removal_wait_for_builds_or_fail_without_harm(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host], **deploy_data(mirror, buildkit_drain_timeout=4))
    assert run_pyinfra(hosts, DEPLOY).returncode == 0
    client_call(host)  # a client: the service runs
    pid = unit_state(host, "buildkit.service")["MainPID"]
    # Idle and converged, buildkitd running: nothing to wait for, still the one state fact.
    rerun = run_pyinfra(hosts, DEPLOY, extra_args=("--debug",))
    assert rerun.returncode == 0 and remote_commands(rerun) == {host.name: CONVERGED_COMMANDS_PER_HOST}
    host.run("echo 'b1 2026-11-30T19:02:03Z' > /run/buildkit-standin/builds")
    upgrade = deploy_data(mirror, buildkit_version="0.13.0")

    run = run_pyinfra(hosts, DEPLOY, data=upgrade)

    assert run.returncode != 0
    assert "1 build(s) still running on buildkit.service (the oldest since 2026-11-30T19:02:03Z) after 4 s" in run.output
    assert unit_state(host, "buildkit.service")["MainPID"] == pid
    assert "0.13.0" in host.run("/usr/local/bin/buildkitd --version").stdout  # the new binaries stay
    removal = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_build_host")
    assert removal.returncode != 0 and "1 build(s) still running" in removal.output, removal.output
    assert unit_state(host, "buildkit.service")["MainPID"] == pid

    # A build that ends during the wait: the upgrade goes on, onto the new daemon.
    host.run("(sleep 3; rm /run/buildkit-standin/builds) >/dev/null 2>&1 </dev/null &")
    run = run_pyinfra(hosts, DEPLOY, data={**upgrade, "buildkit_drain_timeout": 60})
    assert run.returncode == 0, run.output
    assert client_call(host)["buildkitd.version"] == "0.13.0"
    assert run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_build_host").returncode == 0
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"


def test_a_slow_start_is_waited_for_and_never_taken_for_a_refusal(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host], **deploy_data(mirror))
    assert run_pyinfra(hosts, DEPLOY).returncode == 0
    host.run("echo 40 > /run/buildkit-standin/start-delay")  # longer than the 30 s the check used to give

    debug = {"buildkitd_config": json.dumps({"log": {"level": "debug"}})}
    run = run_pyinfra(hosts, DEPLOY, data=debug)

    assert run.returncode == 0, run.output
    assert 'level = "debug"' in buildkit_starts(host)[-1]["config"]

    # Slower than buildkit_verify_timeout: the host fails, saying so, and keeps the new files.
    trace = {"buildkitd_config": json.dumps({"log": {"level": "trace"}}), "buildkit_verify_timeout": 5}
    run = run_pyinfra(hosts, DEPLOY, data=trace)

    assert run.returncode != 0
    assert "BuildKit did not answer in time, but did not refuse the new files either" in run.output, run.output
    assert "refused" not in run.output.replace("did not refuse", "")
    assert 'level = "trace"' in host.run("cat /etc/buildkit/buildkitd.toml").stdout
