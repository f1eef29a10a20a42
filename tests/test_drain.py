"""The drain every restart or stop waits on (deploys/drain.sh), run here against a fake buildctl and systemctl."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pyinfra_nerdctl import layout
from pyinfra_nerdctl.deploys import rendering
from pyinfra_nerdctl.deploys.changes import Changes, plan_changes
from pyinfra_nerdctl.deploys.drain import drain_commands
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL
from pyinfra_nerdctl.deploys.settings import SettingError, resolve_settings
from pyinfra_nerdctl.deploys.takeover import plan_takeover
from pyinfra_nerdctl.facts.builds import parse_builds
from states import converged_state

HEADER = "TYPE\tREF\t\t\t\tCREATED\t\t\tCOMPLETED\tGENERATION\tPINNED"


def fake_host(tmp_path: Path, active: bool = True) -> Path:
    """A buildctl that prints its histories from ./histories (and logs each call), a systemctl for is-active."""
    (tmp_path / "histories").write_text(HEADER + "\n")
    buildctl = tmp_path / "buildctl"
    buildctl.write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n'
        f"[ -f {tmp_path}/broken ] && {{ cat {tmp_path}/broken >&2; exit 1; }}\ncat {tmp_path}/histories\n"
    )
    systemctl = tmp_path / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.calls\nexit {0 if active else 3}\n')
    buildctl.chmod(0o755)
    systemctl.chmod(0o755)
    return tmp_path


def drain(tmp_path: Path, seconds: int, unit: str | None = "buildkit.service") -> subprocess.CompletedProcess:
    (command,) = drain_commands(
        str(tmp_path / "buildctl"), "/run/buildkit/buildkitd.sock", seconds, unit, f"{tmp_path}/systemctl --user"
    )
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)


def running(tmp_path: Path, *builds: tuple[str, str]) -> None:
    rows = [f"STARTED\t{ref}\t{created}\t\t0\t" for ref, created in builds]
    done = "COMPLETE\told1\t2026-11-30T18:00:00Z\t2026-11-30T18:01:00Z\t1\t"
    (tmp_path / "histories").write_text("\n".join([HEADER, *rows, done]) + "\n")


def test_zero_means_no_wait_and_no_command():
    assert drain_commands("/usr/local/bin/buildctl", "/run/buildkit/buildkitd.sock", 0) == []


def test_an_idle_daemon_is_asked_once_and_an_inactive_unit_not_at_all(tmp_path):
    host = fake_host(tmp_path)
    assert drain(host, 600).returncode == 0
    assert (host / "calls").read_text() == "--addr unix:///run/buildkit/buildkitd.sock debug histories\n"
    assert (host / "systemctl.calls").read_text() == "--user is-active --quiet buildkit.service\n"

    (tmp_path / "inactive").mkdir()
    inactive = fake_host(tmp_path / "inactive", active=False)
    assert drain(inactive, 600).returncode == 0
    assert not (inactive / "calls").exists()  # the socket-activated daemon is not started to be asked


def test_builds_still_running_at_the_timeout_fail_with_one_line_naming_them(tmp_path):
    host = fake_host(tmp_path)
    running(host, ("b2", "2026-11-30T19:05:00Z"), ("b1", "2026-11-30T19:02:03Z"))
    started = time.monotonic()
    result = drain(host, 1)
    assert result.returncode == 1
    # It gave up instead of waiting for the builds (a hang bound, not a speed measure).
    assert 1 <= time.monotonic() - started < 60
    (line,) = result.stderr.splitlines()
    assert line.startswith("2 build(s) still running on buildkit.service (the oldest since 2026-11-30T19:02:03Z)")
    assert "BuildKit keeps its previous setup until a later run" in line
    assert "waiting up to 1 s for 2 build(s)" in result.stdout


def test_the_drain_returns_once_the_builds_are_over(tmp_path):
    host = fake_host(tmp_path)
    running(host, ("b1", "2026-11-30T19:02:03Z"))
    waiting = subprocess.Popen(
        ["sh", "-c", drain_commands(str(host / "buildctl"), "/x.sock", 60, None)[0]],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    assert waiting.poll() is None
    running(host)
    assert waiting.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("error", "code"),
    [("rpc error: code = Unimplemented desc = unknown service moby.buildkit.v1.Control", 0), ("connection refused", 1)],
)
def test_a_daemon_that_cannot_list_builds(tmp_path, error, code):
    """Too old to list its builds: not waited for; not answering: waited for, then one line with its error."""
    host = fake_host(tmp_path)
    (host / "broken").write_text(error + "\n")
    result = drain(host, 1)
    assert result.returncode == code, result.stderr
    if code:
        assert "did not say which builds it runs within 1 s" in result.stderr and error in result.stderr


def test_the_fact_parses_builds_and_a_daemon_that_did_not_answer():
    assert parse_builds([]) == []
    assert parse_builds(["build=b1 2026-11-30T19:02:03Z"]) == [{"ref": "b1", "started": "2026-11-30T19:02:03Z"}]
    assert parse_builds(["builds.unanswered=connection refused"]) is None


# Deciding when to wait (pure: no host).


def _settings(**values):
    return resolve_settings({}.get, values)


def test_a_restart_or_stop_of_a_running_service_waits_and_nothing_else_does():
    settings = _settings()
    changed = _settings(buildkitd_config={"log": {"level": "debug"}})
    state = converged_state(settings)
    assert plan_changes(settings, state, (NERDCTL, BUILDKIT)) == Changes()  # converged: no wait, no command
    config = plan_changes(changed, state, (NERDCTL, BUILDKIT))
    assert config.restart_service and config.wait_for_builds
    state["paths"][layout.SOCKET_PATH]["sha256"] = "0" * 64  # a socket restart restarts the service too
    socket = plan_changes(settings, state, (NERDCTL, BUILDKIT))
    assert socket.restart_socket and socket.wait_for_builds
    state["units"]["service"]["active"] = False  # nothing runs, nothing to wait for
    assert not plan_changes(changed, state, (NERDCTL, BUILDKIT)).wait_for_builds


def test_taking_over_waits_for_the_builds_of_the_daemons_it_stops_through_their_sockets():
    state = converged_state(_settings())
    state["units"]["service"]["active"] = False
    recipe = {
        "unit": "buildkitd.service",
        "path": "/lib/systemd/system/buildkitd.service",
        "socket": "/run/buildkit/buildkitd.sock",
        "enabled": True,
        "active": True,
    }
    socket_unit = {**recipe, "unit": "bk.socket", "path": "/etc/systemd/system/bk.socket", "socket": "/run/bk.sock"}
    processes = [
        {
            "pid": 812,
            "unit": "buildkitd.service",
            "socket": "/run/buildkit/buildkitd.sock",
            "main": True,
            "socket_activated": False,
            "enabled": True,
        },
        {"pid": 813, "unit": "bk.service", "socket": "fd://", "main": True, "socket_activated": True, "enabled": False},
        {
            "pid": 950,
            "unit": "session-3.scope",
            "socket": "/run/hand.sock",
            "main": False,
            "socket_activated": False,
            "enabled": False,
        },
    ]
    state["foreign_buildkit"] = {"units": [recipe, socket_unit], "processes": processes}
    takeover = plan_takeover(state, allowed=True)
    assert takeover.busy_sockets == ("/run/buildkit/buildkitd.sock", "/run/bk.sock", "/run/hand.sock")
    # Our own socket-activated daemon is not stopped by a takeover: nothing to wait for there.
    ours = {
        "pid": 900,
        "unit": "buildkit.service",
        "socket": "fd://",
        "main": True,
        "socket_activated": True,
        "enabled": False,
    }
    state["foreign_buildkit"] = {"units": [recipe], "processes": [ours, processes[0]]}
    assert plan_takeover(state, allowed=True).busy_sockets == ("/run/buildkit/buildkitd.sock",)


@pytest.mark.parametrize(("drain", "stop"), [(600, "600"), (0, "90"), (10, "90"), (3600, "3600")])
def test_the_unit_never_kills_a_stop_sooner_than_the_drain_would_wait(drain, stop):
    unit = rendering.buildkit_service_unit(_settings(buildkit_drain_timeout=drain, buildkit_verify_timeout=900))
    assert f"\nTimeoutStopSec={stop}\n" in unit and "\nTimeoutStartSec=900\n" in unit


def test_the_timeouts_are_checked():
    assert _settings(buildkit_drain_timeout="0").buildkit_drain_timeout == 0
    with pytest.raises(SettingError, match=r"buildkit_verify_timeout=0 is not a whole number of seconds, at least 1"):
        _settings(buildkit_verify_timeout=0)
    with pytest.raises(SettingError, match=r"buildkit_drain_timeout='soon' is not a whole number of seconds \(0"):
        _settings(buildkit_drain_timeout="soon")
