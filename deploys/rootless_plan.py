"""Rootless build hosts, decided without a host: settings, the user's files, and what a host needs.

Everything here is pure and unit-tested: the deploys in ``rootless.py`` read one
``RootlessState`` fact and apply what ``plan_rootless`` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import layout
from ..facts.rootless import INSTALLED, socket_path
from ..layout import (
    USER_BUILDKIT_CONFIG,
    USER_CONTAINERD_FILE,
    USER_GOOD_DIR,
    USER_NERDCTL_CONFIG,
    USER_SERVICE_FILE,
    USER_SOCKET_FILE,
    USER_UNIT_FILES,
)
from .changes import ManagedFile, file_outdated
from .rendering import HEADER, stop_and_start_timeouts, toml_string
from .settings import ROOTLESS_DEFAULTS, RootlessSettings, Settings
from .verify import USER_SYSTEMD, check_body, check_values

# login.defs defaults (SUB_UID_MIN, SUB_UID_MAX, SUB_UID_COUNT), as useradd allocates.
SUBID_MIN, SUBID_MAX, SUBID_COUNT = 100000, 600100000, 65536
# Debian package of each program rootless containerd needs.
PACKAGES = {"newuidmap": "uidmap", "newgidmap": "uidmap", "rootlesskit": "rootlesskit", "slirp4netns": "slirp4netns"}
USER_DBUS_PACKAGE = "dbus-user-session"

# What the user's manager enables and starts; the socket starts BuildKit's service.
STARTED_UNITS = (layout.CONTAINERD_UNIT, layout.SOCKET_UNIT)


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments split into ``(rootless_* settings, build-host settings)``."""
    rootless = {key: value for key, value in overrides.items() if key in ROOTLESS_DEFAULTS}
    return rootless, {key: value for key, value in overrides.items() if key not in ROOTLESS_DEFAULTS}


def unit_path(settings: Settings) -> str:
    """``PATH`` of the user's units: ``bin_dir``, the full archive's ``bin/``, then the system's."""
    folders = [settings.bin_dir, f"{settings.full_prefix.rstrip('/')}/bin"] if settings.full else [settings.bin_dir]
    return ":".join([*dict.fromkeys(folders), layout.SYSTEM_PATH])


def containerd_user_unit(settings: Settings, rootless: RootlessSettings) -> str:
    """The user's ``containerd.service``: nerdctl's ``containerd-rootless.sh`` under RootlessKit.

    As the setup tool writes it, but ``Type=notify`` (containerd reports ready through
    RootlessKit, so BuildKit starts only once containerd answers) and the network
    chosen by ``rootless_network``: RootlessKit's own (slirp4netns), or the host's.
    """
    if rootless.network == "host":
        network = ("CONTAINERD_ROOTLESS_ROOTLESSKIT_NET=host", "CONTAINERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER=none")
    else:
        # Not detached: with RootlessKit's --detach-netns (its default where supported), the namespaces
        # BuildKit enters keep the host's network, and RUN steps would see the host's interfaces.
        network = (
            "CONTAINERD_ROOTLESS_ROOTLESSKIT_NET=slirp4netns",
            "CONTAINERD_ROOTLESS_ROOTLESSKIT_DETACH_NETNS=false",
        )
    return (
        HEADER
        + "[Unit]\nDescription=containerd (rootless)\n"
        + "Documentation=https://github.com/containerd/nerdctl/blob/main/docs/rootless.md\n\n"
        + f"[Service]\nEnvironment=PATH={unit_path(settings)}\n"
        + "".join(f"Environment={variable}\n" for variable in network)
        + f"ExecStart={settings.bin_dir}/containerd-rootless.sh\n"
        + "ExecReload=/bin/kill -s HUP $MAINPID\n"
        + "Type=notify\nNotifyAccess=all\nTimeoutSec=120\nRestart=always\nRestartSec=2\n"
        + "StartLimitBurst=3\nStartLimitInterval=60s\n"
        + "LimitNOFILE=infinity\nLimitNPROC=infinity\nLimitCORE=infinity\nTasksMax=infinity\n"
        + "Delegate=yes\nKillMode=mixed\n\n"
        + "[Install]\nWantedBy=default.target\n"
    )


def buildkit_user_socket(rootless: RootlessSettings) -> str:
    """The user's ``buildkit.socket``, where rootless nerdctl looks first for the namespace.

    ``%t`` is the user's runtime folder (0700), so no other user reaches the socket.
    """
    return (
        HEADER
        + "[Unit]\nDescription=BuildKit socket (rootless)\nDocumentation=https://github.com/moby/buildkit\n\n"
        + f"[Socket]\nListenStream=%t/buildkit-{rootless.namespace}/buildkitd.sock\n"
        + "SocketMode=0600\nDirectoryMode=0700\nRemoveOnStop=yes\n\n"
        + "[Install]\nWantedBy=sockets.target\n"
    )


def buildkit_user_service(settings: Settings, home: str) -> str:
    """The user's ``buildkit.service``: ``buildkitd --addr fd://`` inside containerd's RootlessKit namespaces.

    ``nsenter --no-fork`` keeps the process id, so systemd's listening socket (fd 3,
    ``LISTEN_PID``) and readiness notification reach buildkitd as they would outside.
    It goes with containerd (``PartOf=``): the namespaces it entered go with it. Its stop and
    start timeouts are the root service's (``stop_and_start_timeouts``): a stop does not kill builds.
    """
    return (
        HEADER
        + "[Unit]\nDescription=BuildKit (rootless)\nDocumentation=https://github.com/moby/buildkit\n"
        + "Requires=buildkit.socket containerd.service\nAfter=buildkit.socket containerd.service\n"
        + "PartOf=containerd.service\n\n"
        + f"[Service]\nType=notify\nNotifyAccess=all\nEnvironment=PATH={unit_path(settings)}\n"
        + f"ExecStart={settings.bin_dir}/containerd-rootless-setuptool.sh nsenter -- "
        + f"buildkitd --addr fd:// --config {home}/{USER_BUILDKIT_CONFIG}\n"
        + "KillMode=mixed\n"
        + stop_and_start_timeouts(settings)
    )


def buildkitd_user_toml(rootless: RootlessSettings, home: str) -> str:
    """The user's ``buildkitd.toml``: the rootless containerd worker on the user's containerd and namespace.

    ``/run/containerd`` is the user's containerd inside its namespaces (the script binds
    ``$XDG_RUNTIME_DIR/containerd`` there); state stays under the user's data folder.
    """
    return (
        HEADER
        + f"root = {toml_string(f'{home}/.local/share/buildkit-{rootless.namespace}')}\n"
        + "\n[worker.oci]\n  enabled = false\n"
        + "\n[worker.containerd]\n  enabled = true\n  rootless = true\n"
        + '  address = "/run/containerd/containerd.sock"\n'
        + f"  namespace = {toml_string(rootless.namespace)}\n"
    )


def nerdctl_user_toml(rootless: RootlessSettings) -> str:
    """The user's ``nerdctl.toml`` (rootless nerdctl reads only this one): the namespace BuildKit builds into."""
    return HEADER + f"namespace = {toml_string(rootless.namespace)}\n"


def user_files(settings: Settings, rootless: RootlessSettings, home: str) -> tuple[ManagedFile, ...]:
    """Every file the user's rootless containerd and BuildKit need, rendered; paths relative to ``home``."""
    return (
        ManagedFile(USER_CONTAINERD_FILE, containerd_user_unit(settings, rootless)),
        ManagedFile(USER_SOCKET_FILE, buildkit_user_socket(rootless)),
        ManagedFile(USER_SERVICE_FILE, buildkit_user_service(settings, home)),
        ManagedFile(USER_BUILDKIT_CONFIG, buildkitd_user_toml(rootless, home)),
        ManagedFile(USER_NERDCTL_CONFIG, nerdctl_user_toml(rootless)),
    )


def free_subid_range(taken: Iterable[tuple[str, int, int]], count: int = SUBID_COUNT) -> int | None:
    """The lowest start of ``count`` subordinate IDs that overlap none of ``taken``, or None.

    ``taken`` holds ``(name, start, count)`` from ``/etc/subuid`` and ``/etc/subgid`` together,
    so the user gets the same range for both, as useradd does.

    >>> free_subid_range([("a", 100000, 65536)])
    165536
    """
    start = SUBID_MIN
    for _, begin, length in sorted(taken, key=lambda entry: entry[1]):
        if begin + length <= start:
            continue
        if begin >= start + count:
            break
        start = begin + length
    return start if start + count - 1 <= SUBID_MAX else None


@dataclass(frozen=True)
class RootlessChanges:
    """What one host needs for one user; empty when converged."""

    packages: tuple[str, ...] = ()
    add_subuids: tuple[int, int] | None = None
    add_subgids: tuple[int, int] | None = None
    enable_linger: bool = False
    start_manager: bool = False
    files: tuple[ManagedFile, ...] = ()
    daemon_reload: bool = False
    enable: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    restart_containerd: bool = False
    restart_socket: bool = False
    restart_service: bool = False
    # A restart stops the user's running buildkit.service: its builds in flight are waited for first.
    wait_for_builds: bool = False


class RootlessError(ValueError):
    """A host that cannot run rootless BuildKit for the user; the message says what is missing."""


def _programs_missing(rootless: RootlessSettings, state: dict) -> list[str]:
    wanted = ["newuidmap", "newgidmap", "rootlesskit"] + (["slirp4netns"] if rootless.network == "slirp4netns" else [])
    return [program for program in wanted if program not in state["programs"]]


def check_prerequisites(settings: Settings, rootless: RootlessSettings, state: dict) -> None:
    """Raise a ``RootlessError`` for the first thing the host lacks; nothing has changed yet."""
    user = rootless.user
    if not state["systemd"]:
        raise RootlessError(
            "systemd is not the running init system; rootless BuildKit runs as the user's systemd services"
        )
    if not state["exists"]:
        raise RootlessError(f"user {user!r} does not exist: create it first (e.g. useradd -m {user})")
    if state["uid"] == 0:
        raise RootlessError(f"user {user!r} is root (uid 0): rootless BuildKit needs a non-root user")
    if not state["home_exists"]:
        raise RootlessError(f"the home folder of user {user!r}, {state['home']}, does not exist")
    if state["userns_refused"]:
        raise RootlessError(
            f"the kernel refuses unprivileged user namespaces ({state['userns_refused']}): "
            "rootless containerd cannot run on this host"
        )
    missing = [name for name in INSTALLED if name not in state["installed"]]
    if missing:
        raise RootlessError(
            f"{', '.join(missing)} not found in {settings.bin_dir}: install the build host first "
            "(install_build_host, with the same bin_dir or nerdctl_flavor)"
        )
    if "containerd" not in state["programs"]:
        raise RootlessError("no containerd binary: install the distribution's containerd, or use nerdctl_flavor='full'")
    programs = _programs_missing(rootless, state)
    if programs and not rootless.packages:
        raise RootlessError(
            f"{', '.join(programs)} not found and rootless_packages is off: install "
            f"{', '.join(dict.fromkeys(PACKAGES[p] for p in programs))}, or turn rootless_packages on"
        )
    if programs and "apt-get" not in state["programs"]:
        raise RootlessError(
            f"{', '.join(programs)} not found and this host has no apt-get: install them yourself "
            "and set rootless_packages=false"
        )


def plan_subids(rootless: RootlessSettings, state: dict) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """``(subuid range, subgid range)`` to add (``(first, last)``), None for a kind the user has."""
    if state["subuid"] and state["subgid"]:
        return None, None
    start = free_subid_range(state["all_subuid"] + state["all_subgid"])
    if start is None:
        raise RootlessError(
            f"user {rootless.user!r} has no subordinate ID range and none of {SUBID_COUNT} IDs is free "
            f"between {SUBID_MIN} and {SUBID_MAX}: add one to /etc/subuid and /etc/subgid"
        )
    wanted = (start, start + SUBID_COUNT - 1)
    return (None if state["subuid"] else wanted), (None if state["subgid"] else wanted)


def plan_rootless(settings: Settings, rootless: RootlessSettings, state: dict) -> RootlessChanges:
    """The changes the user's rootless BuildKit needs on a host whose ``RootlessState`` is ``state``.

    Checks every prerequisite first. A changed containerd unit restarts containerd (and
    BuildKit with it); a changed socket restarts the socket (and a running BuildKit); a
    changed BuildKit unit or config, or a BuildKit that started before its binary changed,
    restarts a running BuildKit only.
    """
    check_prerequisites(settings, rootless, state)
    subuids, subgids = plan_subids(rootless, state)
    missing = _programs_missing(rootless, state)
    packages = [PACKAGES[program] for program in missing] + ([] if state["user_dbus"] else [USER_DBUS_PACKAGE])
    wanted = user_files(settings, rootless, state["home"])
    files = tuple(file for file in wanted if file_outdated(state["files"].get(file.path), file, (rootless.user, None)))
    changed = {file.path for file in files}
    units = state["units"]
    containerd, socket, service = (
        units[name] for name in (layout.CONTAINERD_UNIT, layout.SOCKET_UNIT, layout.SERVICE_UNIT)
    )
    restart_containerd = containerd["active"] and (USER_CONTAINERD_FILE in changed or containerd["stale"])
    restart_socket = socket["active"] and (USER_SOCKET_FILE in changed or socket["stale"])
    service_inputs = bool(changed & {USER_SERVICE_FILE, USER_BUILDKIT_CONFIG}) or service["stale"]
    restart_service = service["active"] and not (restart_containerd or restart_socket) and service_inputs
    return RootlessChanges(
        packages=tuple(dict.fromkeys(packages if rootless.packages else [])),
        add_subuids=subuids,
        add_subgids=subgids,
        enable_linger=not state["lingering"],
        start_manager=not state["manager"],
        files=files,
        daemon_reload=state["manager"]
        and (bool(changed & set(USER_UNIT_FILES)) or any(unit["needs_daemon_reload"] for unit in units.values())),
        enable=tuple(name for name in STARTED_UNITS if not units[name]["enabled"]),
        start=tuple(name for name in STARTED_UNITS if not units[name]["active"]),
        restart_containerd=restart_containerd,
        restart_socket=restart_socket,
        restart_service=restart_service,
        wait_for_builds=service["active"] and (restart_containerd or restart_socket or restart_service),
    )


# What the user's BuildKit runs on; the check keeps copies of them and puts them back if refused.
USER_BUILDKIT_FILES = (USER_BUILDKIT_CONFIG, USER_SERVICE_FILE, USER_SOCKET_FILE)


def check_skip_reason(settings: Settings, changes: RootlessChanges) -> str | None:
    """Why the check that the user's BuildKit answers does not run on this host; None when it does."""
    touched = {file.path for file in changes.files} & {*USER_BUILDKIT_FILES, USER_CONTAINERD_FILE}
    if not (
        touched or changes.start or changes.restart_containerd or changes.restart_socket or changes.restart_service
    ):
        return "nothing the user's BuildKit depends on changed"
    if not settings.buildkit_verify:
        return "buildkit_verify is off"
    return None


def user_check_body(settings: Settings, rootless: RootlessSettings, state: dict) -> str:
    """``verify.sh`` for the user's BuildKit, to run as the user: the user's units, socket and files.

    No containerd socket to wait for: the user's containerd is a unit BuildKit requires.
    The binary is root's (the build host's), not the user's to put back.
    """
    home = state["home"]
    values = check_values(
        settings,
        buildkit_socket=socket_path(state["uid"], rootless.namespace),
        containerd_socket="",
        namespace=rootless.namespace,
        good_dir=f"{home}/{USER_GOOD_DIR}",
        watched=[f"{home}/{relative}" for relative in USER_BUILDKIT_FILES],
        service_was_running=state["units"][layout.SERVICE_UNIT]["active"],
    )
    return check_body(values, USER_SYSTEMD)
