"""Rootless build hosts: one user's own containerd and BuildKit, as that user's systemd services.

Decided from one ``RootlessState`` fact (see ``rootless_plan``); files in the user's
home are written as the user (``runuser``), never as root, so a link the user planted
there cannot redirect a write.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Generator
from io import StringIO
from typing import Any, cast

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt

from ..facts.rootless import ROOTLESS_STATE_DIR, USER_UNITS, RootlessState, marker_path, user_runtime_env
from ..facts.types import RootlessStateDict
from .build_host import host_settings
from .operations import TEMP_PREFIX, UPLOAD_DIR, private_dirs_command, run_commands
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
    user_files,
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


def _state(settings: Settings, rootless: RootlessSettings) -> RootlessStateDict | None:
    """The one ``RootlessState`` fact; None when it could not be read (pyinfra has then failed this host)."""
    state = host.get_fact(
        RootlessState,
        user=rootless.user,
        bin_dir=settings.bin_dir,
        namespace=rootless.namespace,
        full_prefix=settings.full_prefix,
    )
    if state is None:
        logger.error(f"{host.name}: could not read the host's state; nothing was changed on it")
    return state


def as_user(user: str, uid: int, command: str) -> str:
    """``command`` (a shell string) run as ``user``, able to reach the user's systemd manager."""
    return f"runuser -u {shlex.quote(user)} -- env {user_runtime_env(str(uid))} sh -c {shlex.quote(command)}"


def user_systemctl(user: str, uid: int, arguments: str) -> str:
    return as_user(user, uid, f"systemctl --user {arguments}")


@operation()
def user_file(
    user: str, uid: int, home: str, relative: str, content: str | None
) -> Generator[str | FileUploadCommand, None, None]:
    """Write ``content`` to ``relative`` under ``home`` as ``user`` (0644), atomically; ``None``: nothing to write.

    The caller has decided from one fact that the file differs.
    Uploaded as root to a private temporary file in a root-only folder, then copied into place by the user
    (``runuser``), so the write has exactly the user's own rights.

    .. code:: python

        user_file(user="alice", uid=1001, home="/home/alice", relative=".config/nerdctl/nerdctl.toml",
                  content='namespace = "default"\\n')
    """
    if content is None:
        host.noop(f"~{user}/{relative} is as wanted")
        return
    # Root's own upload folder (a link in /tmp, planted by a user, could redirect root's upload), a name per run.
    upload = f"{UPLOAD_DIR}/{TEMP_PREFIX.lstrip('.')}-user.{uid}.{secrets.token_hex(4)}"
    yield private_dirs_command()
    path = shlex.quote(f"{home}/{relative}")
    temp = shlex.quote(f"{home}/{relative}.{TEMP_PREFIX.lstrip('.')}-{secrets.token_hex(4)}.tmp")
    yield FileUploadCommand(StringIO(content), upload)
    write = f'umask 022 && mkdir -p "$(dirname {path})" && cat > {temp} && chmod 644 {temp} && mv -f {temp} {path}'
    yield f"chmod 600 {upload} && {as_user(user, uid, write)} < {upload}; status=$?; rm -f {upload}; exit $status"


def _packages(changes: RootlessChanges) -> None:
    """The missing distribution packages, with pyinfra's own operation; a no-op (reading nothing) otherwise."""
    install = apt.packages if changes.packages else _no_packages
    install(
        name="Packages for rootless containerd",
        packages=list(changes.packages),
        update=True,
        cache_time=3600,
        no_recommends=True,
    )


@operation()
def _no_packages(packages: list[str], update: bool, cache_time: int, no_recommends: bool) -> Generator[str, None, None]:
    host.noop("the programs rootless containerd needs are installed")
    yield from ()


def _apply(
    changes: RootlessChanges, rootless: RootlessSettings, state: RootlessStateDict, wanted: tuple[str, ...]
) -> None:
    """One operation per step, in one order on every host; a step with nothing to do is a no-op there.

    ``wanted`` are the user's file slots (paths relative to the home folder).
    """
    user, uid, home = rootless.user, state["uid"], state["home"]
    assert uid is not None and home is not None  # plan_rootless refused a user that does not exist
    quoted = shlex.quote(user)
    _packages(changes)
    added = "-".join(map(str, changes.add_subuids or changes.add_subgids or ()))
    ranges = [f"--add-subuids {added}"] if changes.add_subuids else []
    ranges += [f"--add-subgids {added}"] if changes.add_subgids else []
    run_commands(
        name="Subordinate IDs",
        commands=[f"usermod {' '.join(ranges)} {quoted}", _mark(user, "subids", added)] if ranges else [],
        unneeded=f"{user} has subordinate IDs",
    )
    run_commands(
        name="Lingering",
        commands=[f"loginctl enable-linger {quoted}", _mark(user, "linger")] if changes.enable_linger else [],
        unneeded=f"{user} lingers",
    )
    run_commands(
        name="The user's systemd manager",
        commands=[f"systemctl start user@{uid}.service"] if changes.start_manager else [],
        unneeded=f"{user}'s systemd manager runs",
    )
    to_write = {file.path: file.content for file in changes.files}
    for relative in wanted:
        user_file(
            name=f"Write ~/{relative}", user=user, uid=uid, home=home, relative=relative, content=to_write.get(relative)
        )
    steps = (
        (
            "Reload the user's units",
            ["daemon-reload"] if changes.daemon_reload else [],
            "the user's systemd has the current units",
        ),
        ("Enable the user's units", [f"enable {' '.join(changes.enable)}"] if changes.enable else [], "enabled"),
        ("Start the user's units", [f"start {' '.join(changes.start)}"] if changes.start else [], "active"),
        # containerd's restart takes BuildKit with it (PartOf=); the socket's takes its service (Requires=).
        (
            "Restart the user's containerd",
            ["restart containerd.service"] if changes.restart_containerd else [],
            "containerd runs what is on disk",
        ),
        (
            "Restart the user's BuildKit socket",
            ["restart buildkit.socket"] if changes.restart_socket else [],
            "buildkit.socket runs what is on disk",
        ),
        (
            "Restart the user's BuildKit",
            ["try-restart buildkit.service"] if changes.restart_service else [],
            "buildkit.service runs what is on disk",
        ),
    )
    for name, arguments, unneeded in steps:
        run_commands(
            name=name, commands=[user_systemctl(user, uid, argument) for argument in arguments], unneeded=unneeded
        )


def _mark(user: str, what: str, content: str = "") -> str:
    """The command that records that this package turned ``what`` on for ``user`` (with ``content``)."""
    return f"mkdir -p {ROOTLESS_STATE_DIR} && echo {shlex.quote(content)} > {shlex.quote(marker_path(user, what))}"


def _unmark(user: str, what: str) -> str:
    return f"rm -f {shlex.quote(marker_path(user, what))} && rmdir --ignore-fail-on-non-empty {ROOTLESS_STATE_DIR}"


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
    if state is None:
        return
    try:
        changes = plan_rootless(resolved, rootless, state)
    except RootlessError as error:
        raise _fail(str(error)) from error
    home = state["home"]
    assert home is not None  # plan_rootless refused a user that does not exist
    _apply(changes, rootless, state, tuple(file.path for file in user_files(resolved, rootless, home)))


@deploy("Remove rootless containerd and BuildKit of a user")
def remove_rootless(purge: bool = False, **settings: Any) -> None:
    """The user's units stopped and removed, configs gone, lingering off if this package turned it on.

    The user's images and build cache stay unless ``purge``; with ``purge`` the
    subordinate ID range this package added goes too.

    .. code:: python

        remove_rootless(rootless_user="alice", purge=True)
    """
    resolved, rootless = _settings(settings)
    state = _state(resolved, rootless)
    if state is None:
        return
    user = rootless.user
    exists = state["exists"] and state["uid"] != 0
    # Both None for a user that does not exist: then no command that reads them runs.
    uid, home, quoted = cast(int, state["uid"]), cast(str, state["home"]), shlex.quote(user)
    manager = exists and state["manager"]
    units = [unit for unit in USER_UNITS.values() if state["units"][unit]["active"] or state["units"][unit]["enabled"]]
    present = [relative for relative in (*UNIT_FILES, BUILDKIT_CONFIG, NERDCTL_CONFIG) if relative in state["files"]]
    run_commands(
        name="Stop and disable the user's units",
        commands=[user_systemctl(user, uid, f"disable --now {' '.join(units)}")] if manager and units else [],
        unneeded=f"no unit of {user}'s is enabled or active",
    )
    paths = " ".join(shlex.quote(f"{home}/{relative}") for relative in present)
    folders = " ".join(
        shlex.quote(f"{home}/{folder}") for folder in (".config/buildkit", ".config/nerdctl", ".config/containerd")
    )
    run_commands(
        name="Remove the user's units and configs",
        commands=[as_user(user, uid, f"rm -f {paths} && rmdir --ignore-fail-on-non-empty {folders} 2>/dev/null; true")]
        if exists and present
        else [],
        unneeded=f"{user} has none of our files",
    )
    run_commands(
        name="Reload the user's units",
        commands=[user_systemctl(user, uid, "daemon-reload")] if manager and set(present) & set(UNIT_FILES) else [],
        unneeded="no unit file was removed",
    )
    # Images belong to the user's subordinate IDs: only RootlessKit's namespace may remove them.
    rootlesskit = state["programs"].get("rootlesskit", "rootlesskit")
    data = " ".join(shlex.quote(f"{home}/{relative}") for relative in state["data"])
    run_commands(
        name="Purge the user's images and build cache",
        commands=[as_user(user, uid, f"{rootlesskit} rm -rf {data}")] if purge and exists and state["data"] else [],
        unneeded="nothing to purge" if purge else "images and build cache are kept (no purge)",
    )
    run_commands(
        name="Lingering off",
        commands=[f"loginctl disable-linger {quoted}", _unmark(user, "linger")] if state["lingering_ours"] else [],
        unneeded="lingering was not turned on by pyinfra-nerdctl",
    )
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
    run_commands(
        name="Remove the subordinate IDs",
        # usermod refuses while the user has processes: the manager lingering started goes first
        # (a logged-in user keeps theirs, and the removal says so).
        commands=[
            *([f"systemctl stop user@{uid}.service"] if state["lingering_ours"] else []),
            f"usermod {' '.join(ranges)} {quoted}",
            _unmark(user, "subids"),
        ]
        if purge and exists and ranges
        else [],
        unneeded="subordinate IDs are kept" if purge else "subordinate IDs are kept (no purge)",
    )
