"""Rootless build hosts, decided without a host: settings, the user's files, and what a host needs.

Everything here is pure and unit-tested: the deploys in ``rootless.py`` read one
``RootlessState`` fact and carry out the steps ``rootless_steps`` (from what ``plan_rootless``
returns) or ``plan_rootless_removal`` return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from .. import layout
from ..facts.rootless import INSTALLED, socket_path
from ..facts.types import RootlessStateDict
from ..layout import (
    USER_BUILDKIT_CONFIG,
    USER_CONFIG_DIRS,
    USER_CONTAINERD_FILE,
    USER_GOOD_DIR,
    USER_NERDCTL_CONFIG,
    USER_SERVICE_FILE,
    USER_SOCKET_FILE,
    USER_UNIT_FILES,
)
from . import commands as sh
from .build_plan import no_wait_reason
from .changes import ManagedFile, file_outdated
from .drain import drain_commands
from .rendering import HEADER, stop_and_start_timeouts, toml_string
from .settings import ROOTLESS_DEFAULTS, RootlessSettings, Settings
from .steps import Step, check, run
from .verify import USER_SYSTEMD, check_body, check_values, locked_check

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
        + f"  address = {toml_string(layout.CONTAINERD_SOCKET)}\n"
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


def account(state: RootlessStateDict) -> tuple[int, str]:
    """The user's uid and home folder; a ``RootlessError`` for a user that does not exist (the install's planners)."""
    uid, home = state["uid"], state["home"]
    if uid is None or home is None:
        raise RootlessError(f"user {state['user']!r} does not exist: create it first (e.g. useradd -m {state['user']})")
    return uid, home


def _programs_missing(rootless: RootlessSettings, state: RootlessStateDict) -> list[str]:
    wanted = ["newuidmap", "newgidmap", "rootlesskit"] + (["slirp4netns"] if rootless.network == "slirp4netns" else [])
    return [program for program in wanted if program not in state["programs"]]


def check_prerequisites(settings: Settings, rootless: RootlessSettings, state: RootlessStateDict) -> None:
    """Raise a ``RootlessError`` for the first thing the host lacks; nothing has changed yet."""
    user = rootless.user
    if not state["systemd"]:
        raise RootlessError(
            "systemd is not the running init system; rootless BuildKit runs as the user's systemd services"
        )
    uid, home = account(state)
    if uid == 0:
        raise RootlessError(f"user {user!r} is root (uid 0): rootless BuildKit needs a non-root user")
    if not state["home_exists"]:
        raise RootlessError(f"the home folder of user {user!r}, {home}, does not exist")
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


def plan_subids(
    rootless: RootlessSettings, state: RootlessStateDict
) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
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


def plan_rootless(settings: Settings, rootless: RootlessSettings, state: RootlessStateDict) -> RootlessChanges:
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
    wanted = user_files(settings, rootless, account(state)[1])
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


def user_check_body(settings: Settings, rootless: RootlessSettings, state: RootlessStateDict) -> str:
    """``verify.sh`` for the user's BuildKit, to run as the user: the user's units, socket and files.

    No containerd socket to wait for: the user's containerd is a unit BuildKit requires.
    The binary is root's (the build host's), not the user's to put back.
    """
    uid, home = account(state)
    values = check_values(
        settings,
        buildkit_socket=socket_path(uid, rootless.namespace),
        containerd_socket="",
        namespace=rootless.namespace,
        good_dir=f"{home}/{USER_GOOD_DIR}",
        watched=[f"{home}/{relative}" for relative in USER_BUILDKIT_FILES],
        service_was_running=state["units"][layout.SERVICE_UNIT]["active"],
    )
    return check_body(values, USER_SYSTEMD)


def user_drain_commands(settings: Settings, rootless: RootlessSettings, state: RootlessStateDict) -> list[str]:
    """As the user: wait, up to ``buildkit_drain_timeout``, until the user's BuildKit runs no build (``drain``).

    Asked where the running socket listens: after a change of ``rootless_namespace`` that is still the old one.
    """
    uid = account(state)[0]
    address = state["socket"]["listening"] or socket_path(uid, rootless.namespace)
    return [
        sh.as_user(rootless.user, uid, command)
        for command in drain_commands(
            f"{settings.bin_dir}/buildctl",
            address,
            settings.buildkit_drain_timeout,
            layout.SERVICE_UNIT,
            systemctl="systemctl --user",
        )
    ]


def rootless_steps(
    settings: Settings, rootless: RootlessSettings, state: RootlessStateDict, changes: RootlessChanges
) -> list[Step]:
    """Every step of ``install_rootless``, in one order on every host; every step that changes the host holds its lock."""
    user, uid, wait = rootless.user, account(state)[0], settings.host_lock_wait
    packages = Step(
        "Packages for rootless containerd",
        unneeded="the programs rootless containerd needs are installed",
        kind="packages",
        options={"packages": changes.packages},
    )
    # The new files are in place: if builds still run at the timeout, the host fails here, the user's
    # BuildKit keeps its previous setup, and the next run finds it older than its files and restarts it.
    drain = run(
        "Wait for the builds in flight on the user's BuildKit",
        user_drain_commands(settings, rootless, state) if changes.wait_for_builds else [],
        no_wait_reason(changes.wait_for_builds, f"the user's running {layout.SERVICE_UNIT}"),
    )
    check_step = check(
        "Check that the user's BuildKit answers with the containerd worker",
        locked_check(wait, sh.as_user(user, uid, user_check_body(settings, rootless, state))),
        check_skip_reason(settings, changes),
    )
    return [
        packages,
        *_account_steps(rootless, state, changes, wait),
        *_user_file_steps(settings, rootless, state, changes),
        drain,
        *_user_unit_steps(settings, rootless, state, changes),
        check_step,
    ]


def _user_file_steps(
    settings: Settings, rootless: RootlessSettings, state: RootlessStateDict, changes: RootlessChanges
) -> list[Step]:
    """Each of the user's files, written as the user where it differs (``rootless.user_file``)."""
    to_write = {file.path: file.content for file in changes.files}
    uid, home = account(state)
    return [
        Step(
            f"Write ~/{file.path}",
            unneeded=f"~{rootless.user}/{file.path} is as wanted",
            kind="user_file",
            lock_wait=settings.host_lock_wait,
            options={
                "user": rootless.user,
                "uid": uid,
                "home": home,
                "relative": file.path,
                "content": to_write.get(file.path),
            },
        )
        for file in user_files(settings, rootless, home)
    ]


def _account_steps(
    rootless: RootlessSettings, state: RootlessStateDict, changes: RootlessChanges, wait: int
) -> list[Step]:
    """The user's subordinate IDs, lingering, and systemd manager."""
    user, uid = rootless.user, account(state)[0]
    added = "-".join(map(str, changes.add_subuids or changes.add_subgids or ()))
    kinds = [
        kind for kind, wanted_range in (("uid", changes.add_subuids), ("gid", changes.add_subgids)) if wanted_range
    ]
    return [
        run(
            "Subordinate IDs",
            [*(sh.add_subids(user, kind, added) for kind in kinds), sh.mark(user, "subids", added)] if kinds else [],
            f"{user} has subordinate IDs",
            wait,
        ),
        run(
            "Lingering",
            [sh.linger(user, True), sh.mark(user, "linger")] if changes.enable_linger else [],
            f"{user} lingers",
            wait,
        ),
        run(
            "The user's systemd manager",
            [sh.systemctl("start", f"user@{uid}.service")] if changes.start_manager else [],
            f"{user}'s systemd manager runs",
            wait,
        ),
    ]


def _user_unit_steps(
    settings: Settings, rootless: RootlessSettings, state: RootlessStateDict, changes: RootlessChanges
) -> list[Step]:
    """The user's units reloaded, enabled, started and restarted, as the user."""
    # With buildkit_verify, the check that follows waits for it (and undoes what the daemon refuses).
    restart = f"try-restart {'--no-block ' if settings.buildkit_verify else ''}buildkit.service"
    steps = (
        ("Reload the user's units", "daemon-reload", changes.daemon_reload, "the user's systemd has the current units"),
        ("Enable the user's units", f"enable {' '.join(changes.enable)}", bool(changes.enable), "enabled"),
        ("Start the user's units", f"start {' '.join(changes.start)}", bool(changes.start), "active"),
        # containerd's restart takes BuildKit with it (PartOf=); the socket's takes its service (Requires=).
        (
            "Restart the user's containerd",
            "restart containerd.service",
            changes.restart_containerd,
            "containerd runs what is on disk",
        ),
        (
            "Restart the user's BuildKit socket",
            "restart buildkit.socket",
            changes.restart_socket,
            "buildkit.socket runs what is on disk",
        ),
        ("Restart the user's BuildKit", restart, changes.restart_service, "buildkit.service runs what is on disk"),
    )
    uid = account(state)[0]
    return [
        run(
            name,
            [sh.user_systemctl(rootless.user, uid, arguments)] if needed else [],
            unneeded,
            settings.host_lock_wait,
        )
        for name, arguments, needed, unneeded in steps
    ]


def plan_rootless_removal(
    settings: Settings, rootless: RootlessSettings, state: RootlessStateDict, purge: bool
) -> list[Step]:
    """Every step of ``remove_rootless``, in one order on every host; only what this package made goes.

    The user's images and build cache stay unless ``purge``; with ``purge`` the subordinate ID
    range this package added goes too.
    """
    user, wait = rootless.user, settings.host_lock_wait
    uid = cast(int, state["uid"])  # None for a user that does not exist: then no command reads it
    exists = state["exists"] and uid != 0
    manager = exists and state["manager"]
    units = [
        unit for unit in layout.UNITS.values() if state["units"][unit]["active"] or state["units"][unit]["enabled"]
    ]
    present = [
        relative
        for relative in (*USER_UNIT_FILES, USER_BUILDKIT_CONFIG, USER_NERDCTL_CONFIG)
        if relative in state["files"]
    ]
    building = bool(manager and state["units"][layout.SERVICE_UNIT]["active"])
    return [
        run(
            "Wait for the builds in flight on the user's BuildKit",
            user_drain_commands(settings, rootless, state) if building else [],
            no_wait_reason(building, f"the user's running {layout.SERVICE_UNIT}"),
        ),
        run(
            "Stop and disable the user's units",
            [sh.user_systemctl(user, uid, f"disable --now {' '.join(units)}")] if manager and units else [],
            f"no unit of {user}'s is enabled or active",
            wait,
        ),
        run(
            "Remove the user's units and configs",
            [sh.as_user(user, uid, _remove_user_files(state, present))]
            if exists and (present or state["good_copies"])
            else [],
            f"{user} has none of our files",
            wait,
        ),
        run(
            "Reload the user's units",
            [sh.user_systemctl(user, uid, "daemon-reload")] if manager and set(present) & set(USER_UNIT_FILES) else [],
            "no unit file was removed",
            wait,
        ),
        *_release_steps(rootless, state, purge, wait),
    ]


def _remove_user_files(state: RootlessStateDict, present: list[str]) -> str:
    home = state["home"]
    return sh.remove_user_files(
        [f"{home}/{relative}" for relative in present],
        f"{home}/{USER_GOOD_DIR}",
        [f"{home}/{folder}" for folder in USER_CONFIG_DIRS],
    )


def _purge_step(rootless: RootlessSettings, state: RootlessStateDict, purge: bool, wait: int) -> Step:
    """With ``purge``, the user's images and build cache, removed inside RootlessKit's namespace."""
    user, home = rootless.user, state["home"]
    uid = cast(int, state["uid"])  # None for a user that does not exist: then no command reads it
    exists = state["exists"] and uid != 0
    rootlesskit = state["programs"].get("rootlesskit", "rootlesskit")
    data = [f"{home}/{relative}" for relative in state["data"]]
    return run(
        "Purge the user's images and build cache",
        [sh.as_user(user, uid, sh.purge_user_data(rootlesskit, data))] if purge and exists and data else [],
        "nothing to purge" if purge else "images and build cache are kept (no purge)",
        wait,
    )


def _release_steps(rootless: RootlessSettings, state: RootlessStateDict, purge: bool, wait: int) -> list[Step]:
    """The user's data (with ``purge``), lingering, and the subordinate IDs (with ``purge``), if this package made them."""
    user = rootless.user
    uid = cast(int, state["uid"])  # None for a user that does not exist: then no command reads it
    exists = state["exists"] and uid != 0
    # Only the range this package added, in whichever files it is still listed.
    added = state["subids_ours"]
    ranges = (
        [
            f"--del-sub{kind}s {added[0]}-{added[0] + added[1] - 1}"
            for kind, listed in (("uid", state["subuid"]), ("gid", state["subgid"]))
            if added in listed
        ]
        if added
        else []
    )
    # usermod refuses while the user has processes: the manager lingering started goes first
    # (a logged-in user keeps theirs, and the removal says so).
    stop_manager = [sh.systemctl("stop", f"user@{uid}.service")] if state["lingering_ours"] else []
    return [
        _purge_step(rootless, state, purge, wait),
        run(
            "Lingering off",
            [sh.linger(user, False), sh.unmark(user, "linger")] if state["lingering_ours"] else [],
            "lingering was not turned on by pyinfra-nerdctl",
            wait,
        ),
        run(
            "Remove the subordinate IDs",
            [*stop_manager, sh.delete_subids(user, ranges), sh.unmark(user, "subids")]
            if purge and exists and ranges
            else [],
            "subordinate IDs are kept" if purge else "subordinate IDs are kept (no purge)",
            wait,
        ),
    ]
