"""Rootless build hosts: one user's own containerd and BuildKit, as that user's systemd services.

Decided from one ``RootlessState`` fact (see ``rootless_plan``); files in the user's
home are written as the user (``runuser``), never as root, so a link the user planted
there cannot redirect a write.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt, server

from ..facts.rootless import ROOTLESS_STATE_DIR, USER_UNITS, RootlessState, marker_path, user_runtime_env
from .build_host import host_settings
from .operations import TEMP_PREFIX
from .rootless_plan import (
    BUILDKIT_CONFIG,
    NERDCTL_CONFIG,
    UNIT_FILES,
    RootlessChanges,
    RootlessError,
    RootlessSettings,
    plan_rootless,
    resolve_rootless_settings,
    split_overrides,
)
from .settings import SettingError, Settings


def _fail(message: str) -> DeployError:
    return DeployError(f"{host.name}: {message}")


def _settings(overrides: dict[str, Any]) -> tuple[Settings, RootlessSettings]:
    rootless_overrides, build_overrides = split_overrides(overrides)
    settings = host_settings(build_overrides)
    try:
        return settings, resolve_rootless_settings(host.data.get, rootless_overrides)
    except SettingError as error:
        raise _fail(str(error)) from error


def _state(settings: Settings, rootless: RootlessSettings) -> dict:
    return host.get_fact(
        RootlessState,
        user=rootless.user,
        bin_dir=settings.bin_dir,
        namespace=rootless.namespace,
        full_prefix=settings.full_prefix,
    )


def as_user(user: str, uid: int, command: str) -> str:
    """``command`` (a shell string) run as ``user``, able to reach the user's systemd manager."""
    return f"runuser -u {shlex.quote(user)} -- env {user_runtime_env(str(uid))} sh -c {shlex.quote(command)}"


def user_systemctl(user: str, uid: int, arguments: str) -> str:
    return as_user(user, uid, f"systemctl --user {arguments}")


@operation()
def user_file(
    user: str, uid: int, home: str, relative: str, content: str
) -> Generator[str | FileUploadCommand, None, None]:
    """Write ``content`` to ``relative`` under ``home`` as ``user`` (0644), atomically; the caller has decided it differs.

    Uploaded as root to a private temporary file in a root-only folder, then copied into place by the user
    (``runuser``), so the write has exactly the user's own rights.

    .. code:: python

        user_file(user="alice", uid=1001, home="/home/alice", relative=".config/nerdctl/nerdctl.toml",
                  content='namespace = "default"\\n')
    """
    # A root-only folder: a link in /tmp, planted by a user, could redirect root's upload.
    upload = f"{ROOTLESS_STATE_DIR}/{TEMP_PREFIX.lstrip('.')}-upload.{uid}"
    yield f"mkdir -p {ROOTLESS_STATE_DIR}"
    path = shlex.quote(f"{home}/{relative}")
    temp = shlex.quote(f"{home}/{relative}.{TEMP_PREFIX.lstrip('.')}.tmp")
    yield FileUploadCommand(StringIO(content), upload)
    write = f"umask 022 && mkdir -p $(dirname {path}) && cat > {temp} && chmod 644 {temp} && mv -f {temp} {path}"
    yield f"chmod 600 {upload} && {as_user(user, uid, write)} < {upload}; status=$?; rm -f {upload}; exit $status"


def _apply(changes: RootlessChanges, rootless: RootlessSettings, state: dict) -> None:
    user, uid, home = rootless.user, state["uid"], state["home"]
    quoted = shlex.quote(user)
    if changes.packages:
        apt.packages(
            name=f"Install {', '.join(changes.packages)}",
            packages=list(changes.packages),
            update=True,
            cache_time=3600,
            no_recommends=True,
        )
    if changes.add_subuids or changes.add_subgids:
        ranges = [f"--add-subuids {'-'.join(map(str, changes.add_subuids))}"] if changes.add_subuids else []
        ranges += [f"--add-subgids {'-'.join(map(str, changes.add_subgids))}"] if changes.add_subgids else []
        server.shell(
            name=f"Subordinate IDs for {user}",
            commands=[
                f"usermod {' '.join(ranges)} {quoted}",
                f"mkdir -p {ROOTLESS_STATE_DIR} && touch {shlex.quote(marker_path(user, 'subids'))}",
            ],
        )
    if changes.enable_linger:
        server.shell(
            name=f"Lingering for {user}",
            commands=[
                f"loginctl enable-linger {quoted}",
                f"mkdir -p {ROOTLESS_STATE_DIR} && touch {shlex.quote(marker_path(user, 'linger'))}",
            ],
        )
    if changes.start_manager:
        server.shell(name=f"Start {user}'s systemd manager", commands=[f"systemctl start user@{uid}.service"])
    for file in changes.files:
        user_file(
            name=f"Write ~{user}/{file.path}",
            user=user,
            uid=uid,
            home=home,
            relative=file.path,
            content=file.content,
        )
    commands = []
    if changes.daemon_reload:
        commands.append(user_systemctl(user, uid, "daemon-reload"))
    if changes.enable:
        commands.append(user_systemctl(user, uid, f"enable {' '.join(changes.enable)}"))
    if changes.start:
        commands.append(user_systemctl(user, uid, f"start {' '.join(changes.start)}"))
    # containerd's restart takes BuildKit with it (PartOf=); the socket's takes its service (Requires=).
    if changes.restart_containerd:
        commands.append(user_systemctl(user, uid, "restart containerd.service"))
    if changes.restart_socket:
        commands.append(user_systemctl(user, uid, "restart buildkit.socket"))
    if changes.restart_service:
        commands.append(user_systemctl(user, uid, "try-restart buildkit.service"))
    if commands:
        server.shell(name=f"Enable, start or restart {user}'s units", commands=commands)


@deploy("Install rootless containerd and BuildKit for a user")
def install_rootless(**settings: Any) -> None:
    """One existing user's own rootless containerd and socket-activated BuildKit, started at boot.

    The binaries are the build host's (``install_build_host`` first); RootlessKit, slirp4netns
    and newuidmap come from the distribution (``rootless_packages``) or the full archive.
    Every prerequisite is checked before anything changes.

    .. code:: python

        install_rootless(rootless_user="alice", rootless_network="host")
    """
    resolved, rootless = _settings(settings)
    state = _state(resolved, rootless)
    try:
        changes = plan_rootless(resolved, rootless, state)
    except RootlessError as error:
        raise _fail(str(error)) from error
    if changes == RootlessChanges():
        host.noop(f"{rootless.user}'s rootless BuildKit is installed")
        return
    _apply(changes, rootless, state)


@deploy("Remove rootless containerd and BuildKit of a user")
def remove_rootless(purge: bool = False, **settings: Any) -> None:
    """The user's units stopped and removed, configs gone, lingering off if this package turned it on.

    The user's images and build cache stay unless ``purge``; with ``purge`` the
    subordinate IDs this package added go too.

    .. code:: python

        remove_rootless(rootless_user="alice", purge=True)
    """
    resolved, rootless = _settings(settings)
    state = _state(resolved, rootless)
    user = rootless.user
    if not state["exists"] or state["uid"] == 0:
        host.noop(f"no user {user!r} with rootless BuildKit")
        return
    uid, home = state["uid"], state["home"]
    quoted = shlex.quote(user)
    active = [unit for unit in USER_UNITS.values() if state["units"][unit]["active"] or state["units"][unit]["enabled"]]
    present = [relative for relative in (*UNIT_FILES, BUILDKIT_CONFIG, NERDCTL_CONFIG) if relative in state["files"]]
    commands = []
    if state["manager"] and active:
        commands.append(user_systemctl(user, uid, f"disable --now {' '.join(active)}"))
    if present:
        paths = " ".join(shlex.quote(f"{home}/{relative}") for relative in present)
        folders = " ".join(
            shlex.quote(f"{home}/{folder}") for folder in (".config/buildkit", ".config/nerdctl", ".config/containerd")
        )
        commands.append(
            as_user(user, uid, f"rm -f {paths} && rmdir --ignore-fail-on-non-empty {folders} 2>/dev/null; true")
        )
        if state["manager"] and set(present) & set(UNIT_FILES):
            commands.append(user_systemctl(user, uid, "daemon-reload"))
    if purge and state["data"]:
        folders = " ".join(shlex.quote(f"{home}/{relative}") for relative in state["data"])
        # Images belong to the user's subordinate IDs: only RootlessKit's namespace may remove them.
        rootlesskit = state["programs"].get("rootlesskit", "rootlesskit")
        commands.append(as_user(user, uid, f"{rootlesskit} rm -rf {folders}"))
    if state["lingering_ours"]:
        commands += [f"loginctl disable-linger {quoted}", f"rm -f {shlex.quote(marker_path(user, 'linger'))}"]
    if purge and state["subids_ours"]:
        # usermod refuses while the user has processes: the manager lingering started goes first
        # (a logged-in user keeps theirs, and the removal says so).
        commands += [f"systemctl stop user@{uid}.service"] if state["lingering_ours"] else []
        ranges = [f"--del-subuids {start}-{start + count - 1}" for start, count in state["subuid"]]
        ranges += [f"--del-subgids {start}-{start + count - 1}" for start, count in state["subgid"]]
        commands += [f"usermod {' '.join(ranges)} {quoted}", f"rm -f {shlex.quote(marker_path(user, 'subids'))}"]
    if not commands:
        host.noop(f"{user} has no rootless BuildKit")
        return
    server.shell(name=f"Remove {user}'s rootless containerd and BuildKit", commands=commands)
