"""Another BuildKit setup on a host: what the state fact sees of it, and how a run refuses it or takes it over."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, plan, unit_state
from hostcheck import boot_build_host as boot_standin_host
from mirror import buildkit_path
from pyinfra_cli import run_pyinfra
from pyinfra_nerdctl import layout
from pyinfra_nerdctl.deploys.changes import plan_changes
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL
from pyinfra_nerdctl.deploys.settings import resolve_settings
from pyinfra_nerdctl.deploys.takeover import ForeignSetupError, plan_takeover
from pyinfra_nerdctl.facts import BuildHostState
from pyinfra_nerdctl.facts.foreign import (
    buildkitd_address,
    foreign_buildkit_command,
    is_one_shot,
    parse_foreign_buildkit,
)
from states import converged_state
from test_real_buildkit import DOCKERFILE, boot_build_host, real_data

# The widely copied recipe, as written (typos included).
RECIPE_SOCKET = """[Unit]
Description=BuildKit
Documention=https://github.com/moby/buildkit

[Socket]
ListenStream=%t/buildkit/buildkitd.sock

[Install]
WantedBy=sockets.target
"""
RECIPE_SERVICE = """[Unit]
Description=BuildKit
Require=buildkit.socket
After=buildkit.socket
Documention=https://github.com/moby/buildkit

[Service]
ExecStart=/usr/local/bin/buildkitd --oci-worker=false --containerd-worker=true

[Install]
WantedBy=multi-user.target
"""
RECIPE_DAEMON = "/usr/local/bin/buildkitd --oci-worker=false --containerd-worker=true"
SETTINGS = resolve_settings({}.get, {})
RESET = "systemctl reset-failed buildkit.socket buildkit.service{} 2>/dev/null || true"


def test_the_fact_command_lists_unit_files_without_our_marker_that_run_buildkit(tmp_path: Path):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir(), lib.mkdir()
    (etc / "buildkitd.service").write_text(RECIPE_SERVICE)
    (lib / "buildkit.socket").write_text(RECIPE_SOCKET)
    (etc / "buildkit.service").write_text(
        f"{layout.MARKER}\n[Service]\nExecStart=/usr/local/bin/buildkitd --addr fd://\n"
    )
    (etc / "sshd.service").write_text("[Service]\nExecStart=/usr/sbin/sshd -D\n")
    (lib / "alice-buildkit.service").write_text("[Service]\nUser=alice\nExecStart=/usr/bin/rootlesskit buildkitd\n")

    command = foreign_buildkit_command(unit_dirs=(str(etc), str(lib)))
    subprocess.run(["sh", "-n", "-c", command], check=True)
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout

    lines = {line for line in output.splitlines() if line.startswith("foreign.line=")}
    assert lines == {
        f"foreign.line={etc}/buildkitd.service:ExecStart={RECIPE_DAEMON}",
        f"foreign.line={lib}/buildkit.socket:ListenStream=%t/buildkit/buildkitd.sock",
        f"foreign.line={lib}/alice-buildkit.service:User=alice",
        f"foreign.line={lib}/alice-buildkit.service:ExecStart=/usr/bin/rootlesskit buildkitd",
    }


def _show(unit: str, path: str, file_state: str, active: str, main_pid: int = 0) -> list[str]:
    return [
        f"foreign.unit.Id={unit}",
        f"foreign.unit.FragmentPath={path}",
        f"foreign.unit.UnitFileState={file_state}",
        f"foreign.unit.ActiveState={active}",
        f"foreign.unit.MainPID={main_pid}",
        "foreign.unit.",
    ]


def test_parsing_keeps_the_units_systemd_uses_and_root_processes():
    lines = [
        f"foreign.line=/etc/systemd/system/buildkitd.service:ExecStart={RECIPE_DAEMON}",
        "foreign.line=/lib/systemd/system/buildkit.socket:ListenStream=%t/buildkit/buildkitd.sock",
        # The nerdctl-full archive's unit, shadowed by ours in /etc.
        "foreign.line=/usr/local/lib/systemd/system/buildkit.service:ExecStart=/usr/local/bin/buildkitd",
        "foreign.line=/etc/systemd/system/alice.service:User=alice",
        "foreign.line=/etc/systemd/system/alice.service:ExecStart=/usr/bin/rootlesskit buildkitd",
        "foreign.process=812|buildkitd.service|/usr/local/bin/buildkitd --oci-worker=false --containerd-worker=true ",
        "foreign.process=900|buildkit.service|/usr/local/bin/buildkitd --addr fd:// --config /etc/buildkit/buildkitd.toml ",
        "foreign.process=950|session-3.scope|buildkitd --addr unix:///run/mine.sock ",
        *_show("buildkitd.service", "/etc/systemd/system/buildkitd.service", "enabled", "active", 812),
        *_show("buildkit.socket", "/usr/lib/systemd/system/buildkit.socket", "disabled", "inactive"),
        *_show("alice.service", "/etc/systemd/system/alice.service", "enabled", "active", 1000),
        *_show("buildkit.service", "/etc/systemd/system/buildkit.service", "static", "active", 900),
    ]
    # Only /usr/lib's socket is the one systemd reads on a merged-/usr host.
    lines.insert(2, "foreign.line=/usr/lib/systemd/system/buildkit.socket:ListenStream=%t/buildkit/buildkitd.sock")

    assert parse_foreign_buildkit(lines) == {
        "units": [
            {
                "unit": "buildkitd.service",
                "path": "/etc/systemd/system/buildkitd.service",
                "socket": "/run/buildkit/buildkitd.sock",
                "enabled": True,
                "active": True,
            },
            {
                "unit": "buildkit.socket",
                "path": "/usr/lib/systemd/system/buildkit.socket",
                "socket": "/run/buildkit/buildkitd.sock",
                "enabled": False,
                "active": False,
            },
        ],
        "processes": [
            {
                "pid": 812,
                "unit": "buildkitd.service",
                "socket": "/run/buildkit/buildkitd.sock",
                "main": True,
                "socket_activated": False,
                "enabled": True,
            },
            {
                "pid": 900,
                "unit": "buildkit.service",
                "socket": "fd://",
                "main": True,
                "socket_activated": True,
                "enabled": False,
            },
            {
                "pid": 950,
                "unit": "session-3.scope",
                "socket": "/run/mine.sock",
                "main": False,
                "socket_activated": False,
                "enabled": False,
            },
        ],
    }
    assert parse_foreign_buildkit([]) == {"units": [], "processes": []}
    assert BuildHostState().process(lines)["foreign_buildkit"] == parse_foreign_buildkit(lines)


@pytest.mark.parametrize(
    ("args", "one_shot"),
    [
        ("/usr/local/bin/buildkitd --version", True),
        ("buildkitd -v", True),
        ("buildkitd --debug --help", True),
        ("buildkitd -version=true", True),
        ("buildkitd help", True),
        ("/bin/sh /usr/local/bin/buildkitd --version", True),  # a shell script named buildkitd, as the stand-in
        ("", True),  # exited while the fact read it
        ("/usr/local/bin/buildkitd --addr fd:// --config /etc/buildkit/buildkitd.toml", False),
        (RECIPE_DAEMON, False),
        ("buildkitd --root /var/lib/-v-builds --addr unix:///run/help.sock", False),
    ],
)
def test_one_shot_invocations_are_told_from_daemons(args, one_shot):
    assert is_one_shot(args) is one_shot


def test_parsing_skips_one_shot_and_exited_buildkitd_processes():
    lines = [
        "foreign.process=241|ssh.service|/usr/local/bin/buildkitd --version ",
        "foreign.process=242|cron.service|buildkitd --help ",
        "foreign.process=243|ssh.service|",
        "foreign.process=950|session-3.scope|buildkitd --addr unix:///run/mine.sock ",
    ]
    assert [process["pid"] for process in parse_foreign_buildkit(lines)["processes"]] == [950]


@pytest.mark.parametrize(
    ("args", "address"),
    [
        (RECIPE_DAEMON, "/run/buildkit/buildkitd.sock"),
        ("buildkitd --addr fd:// --config /etc/buildkit/buildkitd.toml", "fd://"),
        ("buildkitd --addr=unix:///run/other.sock", "/run/other.sock"),
        ("buildkitd --addr tcp://127.0.0.1:1234", "tcp://127.0.0.1:1234"),
    ],
)
def test_buildkitd_address(args, address):
    assert buildkitd_address(args) == address


def _state(**foreign) -> dict:
    """A converged host's BuildHostState, buildkitd not running, with ``foreign`` as the fact saw it."""
    state = converged_state(SETTINGS)
    state["units"]["service"]["active"] = False
    return {**state, "foreign_buildkit": {"units": [], "processes": [], **foreign}}


def _unit(name: str, enabled: bool = True, active: bool = True, directory: str = "/etc/systemd/system") -> dict:
    return {
        "unit": name,
        "path": f"{directory}/{name}",
        "socket": "/run/buildkit/buildkitd.sock",
        "enabled": enabled,
        "active": active,
    }


def _process(pid: int, unit: str | None, main: bool = False, fd: bool = False, enabled: bool = False) -> dict:
    return {
        "pid": pid,
        "unit": unit,
        "socket": "fd://" if fd else "/run/buildkit/buildkitd.sock",
        "main": main,
        "socket_activated": fd,
        "enabled": enabled,
    }


def test_a_host_without_another_setup_plans_no_takeover():
    state = _state(processes=[_process(900, "buildkit.service", main=True, fd=True)])
    # A unit of the recipe that is disabled and inactive, outside our paths: what a takeover leaves.
    state["foreign_buildkit"]["units"] = [_unit("buildkitd.service", enabled=False, active=False)]
    takeover = plan_takeover(state, allowed=False)
    assert takeover.commands == () and takeover.state is state
    assert plan_changes(SETTINGS, takeover.state, (NERDCTL, BUILDKIT)) == plan_changes(
        SETTINGS, _state(), (NERDCTL, BUILDKIT)
    )


def test_the_recipe_as_buildkitd_service_is_refused_naming_it_and_the_setting():
    state = _state(units=[_unit("buildkitd.service")], processes=[_process(812, "buildkitd.service", enabled=True)])
    with pytest.raises(ForeignSetupError) as refused:
        plan_takeover(state, allowed=False)
    assert str(refused.value) == (
        "BuildKit already runs here from another setup: buildkitd.service (/etc/systemd/system/buildkitd.service, "
        "socket /run/buildkit/buildkitd.sock, enabled, active). Set buildkit_takeover=true to stop and disable it "
        "and run this package's units instead; nothing was changed"
    )
    assert "\n" not in str(refused.value)


def test_taking_over_buildkitd_service_disables_it_and_restarts_our_socket():
    state = _state(units=[_unit("buildkitd.service")], processes=[_process(812, "buildkitd.service", enabled=True)])
    before = copy.deepcopy(state)
    takeover = plan_takeover(state, allowed=True)
    assert takeover.commands == ("systemctl disable --now buildkitd.service", RESET.format(" buildkitd.service"))
    assert state == before, "the fact's state is not changed"
    # buildkitd.service held the socket's path: our socket is restarted, and the check then runs.
    changes = plan_changes(SETTINGS, takeover.state, (NERDCTL, BUILDKIT))
    assert changes.restart_socket and not changes.files


def test_taking_over_the_recipe_at_our_unit_paths_replaces_the_files_and_starts_our_socket():
    fresh = _state()
    fresh["paths"][layout.SOCKET_PATH]["ours"] = False
    fresh["paths"][layout.SERVICE_PATH]["ours"] = False
    fresh["paths"][layout.SOCKET_PATH]["sha256"] = fresh["paths"][layout.SERVICE_PATH]["sha256"] = "0" * 64
    fresh["units"]["socket"].update(enabled=False, active=False)
    fresh["units"]["service"].update(enabled=True, active=True)
    fresh["foreign_buildkit"] = {
        "units": [_unit("buildkit.service"), _unit("buildkit.socket", enabled=False, active=False)],
        "processes": [_process(812, "buildkit.service", main=True, enabled=True)],
    }
    with pytest.raises(
        ForeignSetupError,
        match=r"buildkit\.service \(/etc/systemd/system/buildkit.service, .*"
        r"enabled, active\); buildkit\.socket \(.*disabled, inactive\)\. Set buildkit_takeover=true",
    ):
        plan_takeover(fresh, allowed=False)

    takeover = plan_takeover(fresh, allowed=True)
    assert takeover.commands == ("systemctl disable --now buildkit.service", RESET.format(""))
    assert takeover.state["units"]["service"] == {**fresh["units"]["service"], "enabled": False, "active": False}
    changes = plan_changes(SETTINGS, takeover.state, (NERDCTL, BUILDKIT))
    assert {file.path for file in changes.files} == {layout.SOCKET_PATH, layout.SERVICE_PATH}
    assert changes.enable_socket and changes.start_socket
    assert not (changes.restart_socket or changes.restart_service)


def test_a_foreign_file_at_our_path_that_no_grep_found_is_refused_too():
    state = _state()
    state["paths"][layout.SOCKET_PATH]["ours"] = False
    with pytest.raises(
        ForeignSetupError,
        match=r"/etc/systemd/system/buildkit.socket \(not written by "
        r"pyinfra-nerdctl, enabled, active\)",
    ):
        plan_takeover(state, allowed=False)
    assert plan_takeover(state, allowed=True).commands == ("systemctl disable --now buildkit.socket", RESET.format(""))


def test_a_buildkitd_left_over_from_an_older_definition_is_stopped():
    state = _state(processes=[_process(700, "buildkit.service", main=True)])
    with pytest.raises(ForeignSetupError, match="buildkitd process 700 of buildkit.service from an older definition"):
        plan_takeover(state, allowed=False)
    takeover = plan_takeover(state, allowed=True)
    assert takeover.commands == ("systemctl stop buildkit.service", RESET.format(""))
    assert not takeover.state["units"]["service"]["active"] and takeover.state["units"]["socket"]["stale"]


def test_our_socket_activated_buildkitd_is_ours_even_when_no_longer_the_main_pid():
    # A concurrent run's check stopped it between the fact's read of the process and of its unit.
    state = _state(processes=[_process(900, "buildkit.service", main=False, fd=True)])
    assert plan_takeover(state, allowed=False).commands == ()


def test_a_buildkitd_that_is_not_the_main_process_of_its_unit_is_stopped_by_its_pid_not_its_unit():
    # Started from an SSH login on a host without logind: in sshd's own cgroup.
    state = _state(processes=[_process(960, "ssh.service", enabled=True)])
    with pytest.raises(ForeignSetupError, match=r"buildkitd process 960 \(ssh.service, socket"):
        plan_takeover(state, allowed=False)
    (stop, reset) = plan_takeover(state, allowed=True).commands
    assert "kill 960" in stop and "ssh" not in stop + reset


def test_a_buildkitd_started_by_hand_is_stopped_by_its_pid():
    state = _state(processes=[_process(950, "session-3.scope")])
    with pytest.raises(ForeignSetupError, match=r"buildkitd process 950 \(session-3.scope, socket /run/buildkit/"):
        plan_takeover(state, allowed=False)
    (stop, reset) = plan_takeover(state, allowed=True).commands
    assert stop.startswith("if grep -qx 'Name:.buildkitd' /proc/950/status 2>/dev/null; then kill 950;")
    subprocess.run(["sh", "-n", "-c", stop], check=True)


# Host tests: the recipe, as written, on a host with the real BuildKit archive.

# (unit folder, service name) as the recipe is copied: at our own unit paths, or as buildkitd.service under /lib.
RECIPE_PLACES = {"buildkit.service": "/etc/systemd/system", "buildkitd.service": "/lib/systemd/system"}
NAMESPACE = "builds"
# The command in docs/units.md that moves the recipe's images into the configured namespace.
MOVE_IMAGES = (
    "for image in $(ctr -n buildkit images ls -q); do "
    'ctr -n buildkit images export - "$image" | ctr -n {namespace} images import -; done'
)


def follow_the_recipe(host, mirror, real, service: str) -> None:
    """BuildKit's binaries in /usr/local/bin and the recipe's units, enabled and restarted by hand."""
    folder = RECIPE_PLACES[service]
    archive = f"{mirror.url}{buildkit_path(real.version, f'buildkit-v{real.version}.linux-amd64.tar.gz')}"
    host.run(
        f"cd /tmp && curl -fsS {archive} | tar -xz && mv bin/* /usr/local/bin/ && chmod a+x /usr/local/bin/build* && "
        f"cat > {folder}/buildkit.socket <<'EOF'\n{RECIPE_SOCKET}EOF\n"
        f"cat > {folder}/{service} <<'EOF'\n{RECIPE_SERVICE}EOF\n"
        f"systemctl daemon-reload && systemctl enable {service.removesuffix('.service')} && "
        f"systemctl restart {service.removesuffix('.service')}"
    )


def workers(host) -> str:
    """``buildctl debug workers -v`` through the usual socket, retried while a daemon starts."""
    return host.run(
        "for i in $(seq 50); do buildctl debug workers -v 2>/dev/null && exit 0; sleep 0.2; done; exit 1"
    ).stdout


def build(host, image: str) -> None:
    """A Dockerfile build with COPY and RUN, as root, through the usual socket."""
    host.run(
        "mkdir -p /root/ctx && cd /root/ctx && cp /bin/busybox busybox && echo hello > hello.txt && "
        f"cat > Dockerfile <<'EOF'\n{DOCKERFILE}EOF\n"
        "buildctl build --frontend dockerfile.v0 --local context=. --local dockerfile=. "
        f"--output type=image,name={image}"
    )


def images(host, namespace: str) -> list[str]:
    return host.run(f"ctr -n {namespace} images ls -q").stdout.split()


def untouched(host, service: str) -> dict:
    """What a refused run must leave as it was: unit files, binaries, configs, the old daemon and its state."""
    return {
        "files": host.run(
            "find /etc/systemd/system /lib/systemd/system /usr/local/bin /etc/buildkit /etc/nerdctl "
            "/var/lib/pyinfra-nerdctl -xdev -printf '%p %m %s %T@\\n' 2>/dev/null | sort"
        ).stdout,
        "units": host.run(
            f"systemctl show -p Id,ActiveState,MainPID,UnitFileState,InvocationID {service} buildkit.socket"
        ).stdout,
    }


@pytest.mark.hosts
@pytest.mark.parametrize("service", sorted(RECIPE_PLACES))
def test_a_host_set_up_by_the_recipe_is_refused_then_taken_over(service, boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    follow_the_recipe(host, mirror, real_buildkit, service)
    assert "org.mobyproject.buildkit.worker.containerd.namespace:\tbuildkit" in workers(host)
    build(host, "docker.io/library/from-the-recipe:1")
    hosts = inventory([host])
    data = real_data(mirror, real_buildkit, containerd_namespace=NAMESPACE)
    before = untouched(host, service)
    takeover = {**data, "buildkit_takeover": "true"}
    assert (
        "Install the nerdctl and BuildKit build host | Stop and disable another BuildKit setup"
        in (plan(hosts, takeover)[host.name])
    )

    refused = run_pyinfra(hosts, DEPLOY, data=data)

    assert refused.returncode != 0
    # /lib is /usr/lib on trixie: systemd names the file by the path it reads.
    folder = host.run(f"readlink -f {RECIPE_PLACES[service]}").stdout.strip()
    message = (
        f"{host.name}: BuildKit already runs here from another setup: {service} ({folder}/{service}, "
        "socket /run/buildkit/buildkitd.sock, enabled, active)"
    )
    assert message in refused.output, refused.output
    (line,) = [line for line in refused.output.splitlines() if message in line]
    assert line.endswith(
        "Set buildkit_takeover=true to stop and disable it and run this package's units instead; nothing was changed"
    )
    assert untouched(host, service) == before
    assert "namespace:\tbuildkit" in workers(host), "the old daemon still answers"

    run = run_pyinfra(hosts, DEPLOY, data=takeover, as_json=True)

    assert run.returncode == 0, run.output
    changed = run.changes_made()[host.name]
    assert changed.index("Install the nerdctl and BuildKit build host | Stop and disable another BuildKit setup") < (
        changed.index(f"Install the nerdctl and BuildKit build host | Write {layout.SERVICE_PATH}")
    )
    assert changed[-1].endswith("Check that BuildKit answers with the containerd worker")
    old = unit_state(host, service)
    assert old["ActiveState"] == "inactive", old
    assert old["UnitFileState"] in ("disabled", "static")  # static: buildkit.service, whose file is now ours
    assert host.run(f"ls /etc/systemd/system/multi-user.target.wants/{service}", check=False).returncode != 0
    assert unit_state(host, "buildkit.socket")["UnitFileState"] == "enabled"
    assert f"org.mobyproject.buildkit.worker.containerd.namespace:\t{NAMESPACE}" in workers(host)
    build(host, "docker.io/library/taken-over:1")
    assert "docker.io/library/taken-over:1" in images(host, NAMESPACE)
    # What the recipe built stays in its namespace until moved, as docs/units.md says.
    assert images(host, "buildkit") == ["docker.io/library/from-the-recipe:1"]
    host.run(MOVE_IMAGES.format(namespace=NAMESPACE))
    assert "docker.io/library/from-the-recipe:1" in images(host, NAMESPACE)

    rerun = run_pyinfra(hosts, DEPLOY, data=takeover, as_json=True)
    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output
    again = run_pyinfra(hosts, DEPLOY, data=data, as_json=True)  # takeover off: nothing else runs BuildKit now
    assert again.returncode == 0 and again.json["results"]["totals"]["success"] == 0, again.output


@pytest.mark.hosts
def test_a_buildkitd_started_by_hand_is_refused_then_stopped_by_its_pid(boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    hosts = inventory([host])
    data = real_data(mirror, real_buildkit)
    assert run_pyinfra(hosts, DEPLOY, data=data).returncode == 0
    host.run(
        "setsid nohup /usr/local/bin/buildkitd --root /var/lib/by-hand --addr unix:///run/by-hand.sock "
        "--oci-worker=false --containerd-worker=true >/dev/null 2>&1 < /dev/null &"
    )
    host.run("for i in $(seq 50); do buildctl --addr unix:///run/by-hand.sock debug workers && exit 0; sleep 0.2; done")
    # Ours is not running: the check after the install stopped it again.
    (pid,) = host.run("grep -l -x 'Name:.buildkitd' /proc/[0-9]*/status | cut -d/ -f3").stdout.split()

    refused = run_pyinfra(hosts, DEPLOY, data=data)

    assert refused.returncode != 0
    assert f"{host.name}: BuildKit already runs here from another setup: buildkitd process {pid} (" in refused.output
    assert "socket /run/by-hand.sock)" in refused.output, refused.output
    run = run_pyinfra(hosts, DEPLOY, data={**data, "buildkit_takeover": "true"}, as_json=True)
    assert run.returncode == 0, run.output
    assert host.run(f"test -e /proc/{pid}", check=False).returncode != 0
    assert "namespace:\tdefault" in workers(host)
    rerun = run_pyinfra(hosts, DEPLOY, data=data, as_json=True)
    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output


# A one-shot `buildkitd --version` that lingers (its stand-in is a shell script: the sleep keeps its name).
LINGERING_VERSION = "#!/bin/sh\nsleep 600\n"


@pytest.mark.hosts
def test_buildkitd_version_runs_are_not_another_setup(boot_hosts, mirror):
    """A monitoring loop of `buildkitd --version` (and a second deploy's version fact) is no other BuildKit setup."""
    host = boot_standin_host(boot_hosts)
    hosts = inventory([host], **deploy_data(mirror))
    assert run_pyinfra(hosts, DEPLOY).returncode == 0
    host.run(
        "mkdir -p /opt/lingering; printf '" + LINGERING_VERSION + "' > /opt/lingering/buildkitd; "
        "chmod 755 /opt/lingering/buildkitd; "
        "setsid nohup /opt/lingering/buildkitd --version >/dev/null 2>&1 < /dev/null & "
        "setsid nohup sh -c 'while :; do /usr/local/bin/buildkitd --version; done' >/dev/null 2>&1 < /dev/null &"
    )
    assert host.run("grep -s -l -x 'Name:.buildkitd' /proc/[0-9]*/status; true").stdout  # the lingering one at least

    for takeover in ("false", "false", "false", "true"):
        rerun = run_pyinfra(hosts, DEPLOY, data={"buildkit_takeover": takeover}, as_json=True)
        assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output
    assert host.run("pgrep -f '^/bin/sh /opt/lingering/buildkitd --version'").stdout.strip()  # not stopped
