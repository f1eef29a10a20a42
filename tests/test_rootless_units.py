"""Unit tests for rootless build hosts: settings, the user's files, the fact's parsing, the plan."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess

import pytest
import tomllib
from pyinfra_nerdctl.deploys.commands import as_user, user_systemctl
from pyinfra_nerdctl.deploys.rootless_plan import (
    RootlessChanges,
    RootlessError,
    buildkit_user_service,
    buildkit_user_socket,
    buildkitd_user_toml,
    check_skip_reason,
    containerd_user_unit,
    free_subid_range,
    nerdctl_user_toml,
    plan_rootless,
    plan_subids,
    split_overrides,
    unit_path,
    user_check_body,
    user_files,
)
from pyinfra_nerdctl.deploys.settings import SettingError, resolve_rootless_settings, resolve_settings
from pyinfra_nerdctl.deploys.verify import VERIFY_SCRIPT
from pyinfra_nerdctl.facts import RootlessState
from pyinfra_nerdctl.facts.rootless import (
    UserFileContents,
    data_folders,
    marker_path,
    parse_passwd,
    parse_rootless_state,
    parse_subid_lines,
    parse_subid_marker,
    parse_userns,
    rootless_state_command,
    socket_path,
)
from pyinfra_nerdctl.layout import (
    USER_BUILDKIT_CONFIG,
    USER_CONTAINERD_FILE,
    USER_NERDCTL_CONFIG,
    USER_SERVICE_FILE,
    USER_SOCKET_FILE,
)

SETTINGS = resolve_settings({}.get, {})
ALICE = resolve_rootless_settings({}.get, {"rootless_user": "alice"})
HOME = "/home/alice"
PROGRAMS = {
    "newuidmap": "/usr/bin/newuidmap",
    "newgidmap": "/usr/bin/newgidmap",
    "rootlesskit": "/usr/bin/rootlesskit",
    "slirp4netns": "/usr/bin/slirp4netns",
    "containerd": "/usr/bin/containerd",
    "apt-get": "/usr/bin/apt-get",
}
STARTED = "Sun 2026-11-29 10:00:00.000000 UTC"
INSTALLED = ("nerdctl", "containerd-rootless.sh", "containerd-rootless-setuptool.sh", "buildkitd", "buildctl")


def fact_output(
    passwd: str | None = "alice:x:1001:1001::/home/alice:/bin/bash",
    subids: tuple[str, ...] = ("operator1:100000:65536", "alice:165536:65536"),
    programs: dict[str, str] = PROGRAMS,
    files: dict[str, str] | None = None,
    units: dict[str, tuple[str, str]] | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """``RootlessState`` output lines of a host; ``files`` maps relative paths to content, ``units`` names to
    ``(UnitFileState, ActiveState)`` (with a manager running)."""
    lines = ["machine=x86_64", "systemd=yes", "user=alice", "namespace=default"]
    lines += [f"passwd={passwd}"] if passwd else []
    lines += [f"subuid={line}" for line in subids] + [f"subgid={line}" for line in subids]
    lines += ["max_user_namespaces=63000", "unprivileged_userns_clone="]
    lines += [f"program.{name}={path}" for name, path in programs.items()]
    lines += [f"installed.{name}=yes" for name in INSTALLED] + ["user_dbus=yes"]
    lines += ["home_exists=yes"] if passwd else []
    for relative, content in (files or {}).items():
        lines.append(f"path={relative}|81a4|644|alice|alice")
        lines.append(f"{hashlib.sha256(content.encode()).hexdigest()}  {relative}")
    if units is not None:
        lines.append("manager=yes")
        for index, name in enumerate(("buildkit.socket", "buildkit.service", "containerd.service")):
            file_state, active = units.get(name, ("disabled", "inactive"))
            if index:
                lines.append("unit.")
            lines += [f"unit.UnitFileState={file_state}", f"unit.ActiveState={active}", "unit.NeedDaemonReload=no"]
            lines += [f"unit.ActiveEnterTimestamp={STARTED}"] if active == "active" else []
    return lines + list(extra)


def converged_output(extra: tuple[str, ...] = ()) -> list[str]:
    files = {file.path: file.content for file in user_files(SETTINGS, ALICE, HOME)}
    units = {
        "buildkit.socket": ("enabled", "active"),
        "buildkit.service": ("static", "active"),
        "containerd.service": ("enabled", "active"),
    }
    return fact_output(files=files, units=units, extra=("linger=yes", "linger_ours=yes", *extra))


# --- settings


def test_rootless_settings_defaults_and_overrides():
    assert ALICE.namespace == "default" and ALICE.network == "slirp4netns" and ALICE.packages is True
    data = {"rootless_user": "bob", "rootless_network": "host", "rootless_packages": "no"}
    resolved = resolve_rootless_settings(data.get, {"rootless_namespace": "builds"})
    assert (resolved.user, resolved.namespace, resolved.network, resolved.packages) == ("bob", "builds", "host", False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "rootless_user is not set"),
        ({"rootless_user": "Alice Smith"}, "rootless_user='Alice Smith' is not a user name"),
        ({"rootless_user": "alice", "rootless_network": "bridge"}, "rootless_network='bridge' is neither"),
        ({"rootless_user": "alice", "rootless_namespace": "a b"}, "rootless_namespace='a b' is not a containerd"),
        ({"rootless_user": "alice", "rootless_packages": "maybe"}, "rootless_packages='maybe' is not a yes/no"),
    ],
)
def test_rootless_settings_refuse_bad_values(overrides, message):
    with pytest.raises(SettingError, match=message):
        resolve_rootless_settings({}.get, overrides)


def test_split_overrides_separates_rootless_keys():
    assert split_overrides({"rootless_user": "a", "bin_dir": "/opt/bin"}) == (
        {"rootless_user": "a"},
        {"bin_dir": "/opt/bin"},
    )


# --- rendering


def test_unit_path_puts_bin_dir_and_the_full_archive_first():
    assert unit_path(SETTINGS).startswith("/usr/local/bin:/usr/local/sbin:")
    full = resolve_settings({}.get, {"nerdctl_flavor": "full", "full_prefix": "/opt/nerdctl"})
    assert unit_path(full).startswith("/opt/nerdctl/bin:/usr/local/sbin:")


def test_containerd_user_unit_runs_the_rootless_script_with_the_chosen_network():
    unit = containerd_user_unit(SETTINGS, ALICE)
    assert "ExecStart=/usr/local/bin/containerd-rootless.sh\n" in unit
    assert "Environment=CONTAINERD_ROOTLESS_ROOTLESSKIT_NET=slirp4netns\n" in unit
    assert "Environment=CONTAINERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS=false\n" in unit
    assert "Type=notify\nNotifyAccess=all\n" in unit and "WantedBy=default.target" in unit
    host = containerd_user_unit(
        SETTINGS, resolve_rootless_settings({}.get, {"rootless_user": "a", "rootless_network": "host"})
    )
    assert "CONTAINERD_ROOTLESS_ROOTLESSKIT_NET=host\n" in host
    assert "CONTAINERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER=none\n" in host


def test_buildkit_user_socket_listens_where_rootless_nerdctl_looks():
    socket = buildkit_user_socket(ALICE)
    assert "ListenStream=%t/buildkit-default/buildkitd.sock\n" in socket
    assert "SocketMode=0600\n" in socket and "WantedBy=sockets.target" in socket
    builds = resolve_rootless_settings({}.get, {"rootless_user": "a", "rootless_namespace": "builds"})
    assert "ListenStream=%t/buildkit-builds/buildkitd.sock\n" in buildkit_user_socket(builds)


def test_buildkit_user_service_enters_the_namespaces_and_takes_the_socket():
    service = buildkit_user_service(SETTINGS, HOME)
    assert (
        "ExecStart=/usr/local/bin/containerd-rootless-setuptool.sh nsenter -- buildkitd --addr fd:// "
        "--config /home/alice/.config/buildkit/buildkitd.toml\n"
    ) in service
    assert "Requires=buildkit.socket containerd.service\n" in service and "PartOf=containerd.service\n" in service
    assert "Type=notify\n" in service and "[Install]" not in service  # started by its socket only
    # As the root service: a stop waits as long as the drain would, so a restart does not kill builds.
    assert "TimeoutStopSec=600\n" in service and "TimeoutStartSec=300\n" in service


def test_buildkitd_user_toml_is_the_rootless_containerd_worker_in_the_namespace():
    config = tomllib.loads(buildkitd_user_toml(ALICE, HOME))
    assert config == {
        "root": "/home/alice/.local/share/buildkit-default",
        "worker": {
            "oci": {"enabled": False},
            "containerd": {
                "enabled": True,
                "rootless": True,
                "address": "/run/containerd/containerd.sock",
                "namespace": "default",
            },
        },
    }


def test_nerdctl_user_toml_names_the_namespace():
    assert tomllib.loads(nerdctl_user_toml(ALICE)) == {"namespace": "default"}


def test_user_files_are_the_units_and_configs():
    assert [file.path for file in user_files(SETTINGS, ALICE, HOME)] == [
        USER_CONTAINERD_FILE,
        USER_SOCKET_FILE,
        USER_SERVICE_FILE,
        USER_BUILDKIT_CONFIG,
        USER_NERDCTL_CONFIG,
    ]


@pytest.mark.skipif(subprocess.run(["which", "systemd-analyze"], capture_output=True).returncode, reason="no systemd")
def test_user_units_have_no_unknown_keys(tmp_path):
    for file in user_files(SETTINGS, ALICE, HOME)[:3]:
        (tmp_path / file.path.split("/")[-1]).write_text(file.content)
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", "--man=no", *[str(path) for path in tmp_path.iterdir()]],
        capture_output=True,
        text=True,
    )
    assert "Unknown key" not in result.stderr and "Unknown section" not in result.stderr, result.stderr


def test_as_user_quotes_the_command_and_reaches_the_manager():
    command = as_user("alice", 1001, "echo 'hi there'")
    assert command == (
        'runuser -u alice -- env XDG_RUNTIME_DIR="/run/user/1001" '
        'DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/1001/bus" sh -c ' + shlex.quote("echo 'hi there'")
    )
    assert user_systemctl("alice", 1001, "daemon-reload").endswith("sh -c 'systemctl --user daemon-reload'")


# --- the fact


def test_parse_passwd():
    assert parse_passwd("alice:x:1001:1002:Alice:/home/alice:/bin/bash") == {
        "uid": 1001,
        "gid": 1002,
        "home": "/home/alice",
    }
    assert parse_passwd(None) is None and parse_passwd("broken") is None


def test_parse_subid_lines_skips_malformed_lines():
    assert parse_subid_lines(["a:1:2", "", "# c", "b:x:1", "c:3:4"]) == [("a", 1, 2), ("c", 3, 4)]


def test_parse_subid_marker():
    assert parse_subid_marker("165536-231071\n") == [165536, 65536]
    assert parse_subid_marker("") is None and parse_subid_marker(None) is None and parse_subid_marker("x-1") is None


def test_parse_userns():
    assert parse_userns("63000", "") is None
    assert parse_userns("0", "1") == "user.max_user_namespaces=0"
    assert parse_userns("63000", "0") == "kernel.unprivileged_userns_clone=0"


def test_paths_of_the_state():
    assert marker_path("alice", "linger") == "/var/lib/pyinfra-nerdctl/rootless/alice.linger"
    assert socket_path(1001, "k8s.io") == "/run/user/1001/buildkit-k8s.io/buildkitd.sock"
    assert ".local/share/buildkit-builds" in data_folders("builds")


def test_rootless_state_command_quotes_the_user_and_is_valid_shell():
    command = rootless_state_command("alice", "/usr/local/bin", "default", "/usr/local")
    assert "getent passwd alice" in command and "buildkit-default/buildkitd.sock" in command
    assert subprocess.run(["sh", "-n", "-c", command]).returncode == 0
    assert RootlessState().command("alice") == f"export LC_ALL=C; {command}"


def test_parse_rootless_state_of_a_converged_host():
    state = parse_rootless_state(
        converged_output(extra=("linger=yes", "socket_stat=c180|600|alice", "data=.local/share/containerd"))
    )
    assert (state["user"], state["uid"], state["home"], state["lingering"]) == ("alice", 1001, HOME, True)
    assert state["subuid"] == [[165536, 65536]] and state["subgid"] == [[165536, 65536]]
    assert state["units"]["containerd.service"] == {
        "enabled": True,
        "active": True,
        "needs_daemon_reload": False,
        "stale": False,
    }
    assert state["socket"] == {
        "path": "/run/user/1001/buildkit-default/buildkitd.sock",
        "exists": True,
        "listening": None,
    }
    assert state["data"] == [".local/share/containerd"] and state["good_copies"] is False
    moved = parse_rootless_state(
        converged_output(extra=("unit.Listen=/run/user/1001/buildkit-old/buildkitd.sock (Stream)",))
    )
    assert moved["socket"]["listening"] == "/run/user/1001/buildkit-old/buildkitd.sock"
    assert parse_rootless_state(converged_output(extra=("good_copies=yes",)))["good_copies"] is True
    assert state["files"][USER_NERDCTL_CONFIG]["user"] == "alice"


def test_parse_rootless_state_of_a_missing_user():
    state = parse_rootless_state(fact_output(passwd=None))
    assert (
        not state["exists"]
        and state["uid"] is None
        and state["socket"]
        == {
            "path": None,
            "exists": False,
            "listening": None,
        }
    )
    assert state["units"]["buildkit.socket"]["active"] is False and not state["manager"]


# --- subordinate IDs


def test_free_subid_range_skips_every_taken_range():
    assert free_subid_range([]) == 100000
    assert free_subid_range([("a", 100000, 65536), ("b", 165536, 10)]) == 165546
    assert free_subid_range([("a", 300000, 65536)]) == 100000  # the gap below fits
    assert free_subid_range([("a", 150000, 65536)]) == 215536  # the gap below does not
    assert free_subid_range([("all", 100000, 600000001)]) is None


def test_plan_subids_adds_only_what_is_missing():
    assert plan_subids(ALICE, parse_rootless_state(fact_output())) == (None, None)
    state = parse_rootless_state(fact_output(subids=("operator1:100000:65536",)))
    assert plan_subids(ALICE, state) == ((165536, 231071), (165536, 231071))
    full = parse_rootless_state(fact_output(subids=("all:100000:600000001",)))
    with pytest.raises(RootlessError, match="none of 65536 IDs is free"):
        plan_subids(ALICE, full)


# --- the plan


def test_a_fresh_host_gets_everything_and_a_converged_one_nothing():
    fresh = plan_rootless(SETTINGS, ALICE, parse_rootless_state(fact_output()))
    assert fresh.enable_linger and fresh.start_manager and len(fresh.files) == 5 and not fresh.daemon_reload
    assert fresh.enable == ("containerd.service", "buildkit.socket") == fresh.start
    assert fresh.packages == () and fresh.add_subuids is None
    assert plan_rootless(SETTINGS, ALICE, parse_rootless_state(converged_output())) == RootlessChanges()


def test_a_changed_input_restarts_exactly_what_reads_it():
    def plan(**overrides):
        return plan_rootless(
            SETTINGS,
            resolve_rootless_settings({}.get, {"rootless_user": "alice", **overrides}),
            parse_rootless_state(converged_output()),
        )

    network = plan(rootless_network="host")
    assert [file.path for file in network.files] == [USER_CONTAINERD_FILE]
    assert network.restart_containerd and network.daemon_reload and not network.restart_service
    namespace = plan(rootless_namespace="builds")
    assert {file.path for file in namespace.files} == {USER_SOCKET_FILE, USER_BUILDKIT_CONFIG, USER_NERDCTL_CONFIG}
    assert namespace.restart_socket and not namespace.restart_containerd and not namespace.restart_service
    # buildkitd replaced after BuildKit started (a build host upgrade): only BuildKit restarts.
    upgraded = plan_rootless(
        SETTINGS,
        ALICE,
        parse_rootless_state(converged_output(extra=("ctime.service=2026-11-29 11:00:00.000000000 +0000",))),
    )
    assert upgraded == RootlessChanges(restart_service=True, wait_for_builds=True)
    # Each restart stops the running BuildKit: its builds are waited for first.
    assert network.wait_for_builds and namespace.wait_for_builds
    idle = fact_output(
        files={file.path: file.content for file in user_files(SETTINGS, ALICE, HOME)},
        units={"buildkit.socket": ("enabled", "active"), "containerd.service": ("enabled", "active")},
        extra=("linger=yes", "ctime.service=2026-11-29 11:00:00.000000000 +0000"),
    )
    assert not plan_rootless(SETTINGS, ALICE, parse_rootless_state(idle)).wait_for_builds


def test_the_check_runs_after_a_change_the_users_buildkit_depends_on():
    converged = parse_rootless_state(converged_output())
    assert check_skip_reason(SETTINGS, RootlessChanges()) == "nothing the user's BuildKit depends on changed"
    nerdctl_only = plan_rootless(
        SETTINGS,
        ALICE,
        parse_rootless_state(converged_output(extra=())),  # converged
    )
    assert check_skip_reason(SETTINGS, nerdctl_only) is not None
    builds = plan_rootless(
        SETTINGS,
        resolve_rootless_settings({}.get, {"rootless_user": "alice", "rootless_namespace": "builds"}),
        converged,
    )
    assert check_skip_reason(SETTINGS, builds) is None
    fresh = plan_rootless(SETTINGS, ALICE, parse_rootless_state(fact_output()))
    assert check_skip_reason(SETTINGS, fresh) is None
    off = resolve_settings({}.get, {"buildkit_verify": "false"})
    assert check_skip_reason(off, fresh) == "buildkit_verify is off"


def test_the_users_check_is_verify_sh_on_the_users_units_socket_and_files():
    state = parse_rootless_state(converged_output())
    body = user_check_body(SETTINGS, ALICE, state)
    assert body.endswith(VERIFY_SCRIPT.read_text())
    assert "buildkit_socket=/run/user/1001/buildkit-default/buildkitd.sock\n" in body
    assert "containerd_socket=''\n" in body and "stop_after=no\n" in body
    assert "good_dir=/home/alice/.local/share/pyinfra-nerdctl/buildkit-good\n" in body
    assert (
        "watched='/home/alice/.config/buildkit/buildkitd.toml /home/alice/.config/systemd/user/buildkit.service "
        "/home/alice/.config/systemd/user/buildkit.socket'\n"
    ) in body
    assert 'systemctl() { command systemctl --user "$@"; }' in body
    # Run as the user, every systemctl talks to the user's manager: try it with a stand-in.
    probe = body.split("set -u")[0] + "systemctl is-active buildkit.service\n"
    fake = 'command() { shift; echo "$@"; }\n'
    out = subprocess.run(["sh", "-c", fake + probe], capture_output=True, text=True).stdout
    assert out == "--user is-active buildkit.service\n", out


def test_user_file_contents_tells_a_missing_file_from_an_empty_one():
    fact = UserFileContents()
    assert fact.command("alice", "/home/alice/a b").startswith("runuser -u alice -- cat -- '/home/alice/a b'")
    assert fact.process([fact.missing]) is None
    assert fact.process([]) == [] and fact.process(["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([line for line in fact_output() if line != "systemd=yes"], "systemd is not the running init system"),
        (fact_output(passwd=None), "user 'alice' does not exist"),
        (fact_output(passwd="alice:x:0:0::/root:/bin/sh"), "user 'alice' is root (uid 0)"),
        (
            [line for line in fact_output() if line != "home_exists=yes"],
            "home folder of user 'alice', /home/alice, does",
        ),
        (
            fact_output(extra=("max_user_namespaces=0",)),
            "refuses unprivileged user namespaces (user.max_user_namespaces=0)",
        ),
        (fact_output(extra=("unprivileged_userns_clone=0",)), "(kernel.unprivileged_userns_clone=0)"),
        (fact_output(programs={k: v for k, v in PROGRAMS.items() if k != "containerd"}), "no containerd binary"),
    ],
)
def test_each_missing_prerequisite_is_an_error(output, message):
    with pytest.raises(RootlessError, match=re.escape(message)):
        plan_rootless(SETTINGS, ALICE, parse_rootless_state(output))


def test_missing_programs_are_installed_or_refused():
    without = {k: v for k, v in PROGRAMS.items() if k not in ("newuidmap", "newgidmap", "slirp4netns")}
    assert plan_rootless(SETTINGS, ALICE, parse_rootless_state(fact_output(programs=without))).packages == (
        "uidmap",
        "slirp4netns",
    )
    host_network = resolve_rootless_settings({}.get, {"rootless_user": "alice", "rootless_network": "host"})
    assert plan_rootless(SETTINGS, host_network, parse_rootless_state(fact_output(programs=without))).packages == (
        "uidmap",
    )
    off = resolve_rootless_settings({}.get, {"rootless_user": "alice", "rootless_packages": False})
    with pytest.raises(RootlessError, match="newuidmap, newgidmap, slirp4netns not found and rootless_packages is off"):
        plan_rootless(SETTINGS, off, parse_rootless_state(fact_output(programs=without)))
    no_apt = {k: v for k, v in without.items() if k != "apt-get"}
    with pytest.raises(RootlessError, match="this host has no apt-get"):
        plan_rootless(SETTINGS, ALICE, parse_rootless_state(fact_output(programs=no_apt)))


def test_the_build_host_must_be_installed_first():
    lines = [line for line in fact_output() if not line.startswith("installed.buildkitd")]
    with pytest.raises(RootlessError, match="buildkitd not found in /usr/local/bin: install the build host first"):
        plan_rootless(SETTINGS, ALICE, parse_rootless_state(lines))
