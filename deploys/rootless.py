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
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt

from .. import layout
from ..facts.rootless import (
    RootlessState,
    UserFileContents,
    marker_path,
    socket_path,
    user_runtime_env,
)
from ..layout import (
    TEMP_PREFIX,
    UPLOAD_DIR,
    USER_BUILDKIT_CONFIG,
    USER_CONFIG_DIRS,
    USER_GOOD_DIR,
    USER_NERDCTL_CONFIG,
    USER_UNIT_FILES,
)
from .build_host import host_settings
from .drain import drain_commands
from .operations import diff_wanted, locked, private_dirs_command, run_commands, show_diff
from .rootless_plan import (
    RootlessChanges,
    RootlessError,
    check_skip_reason,
    plan_rootless,
    split_overrides,
    user_check_body,
    user_files,
)
from .settings import RootlessSettings, SettingError, Settings, resolve_rootless_settings
from .verify import buildkit_answers, locked_check


def _fail(message: str) -> DeployError:
    return DeployError(f"{host.name}: {message}")


def _settings(overrides: dict[str, Any]) -> tuple[Settings, RootlessSettings]:
    rootless_overrides, build_overrides = split_overrides(overrides)
    settings = host_settings(build_overrides)
    try:
        return settings, resolve_rootless_settings(host.data.get, rootless_overrides)
    except SettingError as error:
        raise _fail(str(error)) from error


def _state(settings: Settings, rootless: RootlessSettings) -> dict | None:
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
    user: str, uid: int, home: str, relative: str, content: str | None, lock_wait: int = 600
) -> Generator[str | FileUploadCommand, None, None]:
    """Write ``content`` to ``relative`` under ``home`` as ``user`` (0644), atomically; ``None``: nothing to write.

    The caller has decided from one fact that the file differs; with ``--diff`` the current
    content is read, as the user. Uploaded as root to a private temporary file in a root-only
    folder, then copied into place by the user (``runuser``), so the write has exactly the
    user's own rights; under the host's lock, waiting at most ``lock_wait`` seconds.

    .. code:: python

        user_file(user="alice", uid=1001, home="/home/alice", relative=".config/nerdctl/nerdctl.toml",
                  content='namespace = "default"\\n')
    """
    if content is None:
        host.noop(f"~{user}/{relative} is as wanted")
        return
    if diff_wanted():
        show_diff(f"~{user}/{relative}", host.get_fact(UserFileContents, user=user, path=f"{home}/{relative}"), content)
    # Root's own upload folder (a link in /tmp, planted by a user, could redirect root's upload), a name per run.
    upload = f"{UPLOAD_DIR}/{TEMP_PREFIX.lstrip('.')}-user.{uid}.{secrets.token_hex(4)}"
    yield private_dirs_command()
    path = shlex.quote(f"{home}/{relative}")
    temp = shlex.quote(f"{home}/{relative}.{TEMP_PREFIX.lstrip('.')}-{secrets.token_hex(4)}.tmp")
    yield FileUploadCommand(StringIO(content), upload)
    # The same content from a run that came first: keep the file, and the units' view of it (its ctime).
    write = (
        f'umask 022 && mkdir -p "$(dirname {path})" && cat > {temp} && chmod 644 {temp} && '
        f"if cmp -s {temp} {path}; then rm -f {temp}; else mv -f {temp} {path}; fi"
    )
    # In a subshell, so that the upload goes whether or not the lock was had.
    script = locked([f"chmod 600 {upload}", f"{as_user(user, uid, write)} < {upload}"], lock_wait)
    yield f"( {script} ); status=$?; rm -f {upload}; exit $status"


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
    changes: RootlessChanges, settings: Settings, rootless: RootlessSettings, state: dict, wanted: tuple[str, ...]
) -> None:
    """One operation per step, in one order on every host; a step with nothing to do is a no-op there.

    ``wanted`` are the user's file slots (paths relative to the home folder). Every step that
    changes the host holds the host's lock, as the build host's install does.
    """
    user, uid, home, wait = rootless.user, state["uid"], state["home"], settings.host_lock_wait
    quoted = shlex.quote(user)
    _packages(changes)
    added = "-".join(map(str, changes.add_subuids or changes.add_subgids or ()))
    # Under the lock, a range another run added first is not added again.
    kinds = [
        kind for kind, wanted_range in (("uid", changes.add_subuids), ("gid", changes.add_subgids)) if wanted_range
    ]
    run_commands(
        name="Subordinate IDs",
        commands=[
            *(f"grep -q ^{quoted}: /etc/sub{kind} || usermod --add-sub{kind}s {added} {quoted}" for kind in kinds),
            _mark(user, "subids", added),
        ]
        if kinds
        else [],
        unneeded=f"{user} has subordinate IDs",
        lock_wait=wait,
    )
    run_commands(
        name="Lingering",
        commands=[f"loginctl enable-linger {quoted}", _mark(user, "linger")] if changes.enable_linger else [],
        unneeded=f"{user} lingers",
        lock_wait=wait,
    )
    run_commands(
        name="The user's systemd manager",
        commands=[f"systemctl start user@{uid}.service"] if changes.start_manager else [],
        unneeded=f"{user}'s systemd manager runs",
        lock_wait=wait,
    )
    to_write = {file.path: file.content for file in changes.files}
    for relative in wanted:
        user_file(
            name=f"Write ~/{relative}",
            user=user,
            uid=uid,
            home=home,
            relative=relative,
            content=to_write.get(relative),
            lock_wait=wait,
        )
    # The new files are in place: if builds still run at the timeout, the host fails here, the user's
    # BuildKit keeps its previous setup, and the next run finds it older than its files and restarts it.
    run_commands(
        name="Wait for the builds in flight on the user's BuildKit",
        commands=_wait_for_builds(settings, rootless, state) if changes.wait_for_builds else [],
        unneeded=_no_wait_reason(settings, changes.wait_for_builds),
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
            # With buildkit_verify, the check that follows waits for it (and undoes what the daemon refuses).
            [f"try-restart {'--no-block ' if settings.buildkit_verify else ''}buildkit.service"]
            if changes.restart_service
            else [],
            "buildkit.service runs what is on disk",
        ),
    )
    for name, arguments, unneeded in steps:
        run_commands(
            name=name,
            commands=[user_systemctl(user, uid, argument) for argument in arguments],
            unneeded=unneeded,
            lock_wait=wait,
        )
    buildkit_answers(
        name="Check that the user's BuildKit answers with the containerd worker",
        script=locked_check(wait, as_user(user, uid, user_check_body(settings, rootless, state))),
        skip_reason=check_skip_reason(settings, changes),
    )


def _wait_for_builds(settings: Settings, rootless: RootlessSettings, state: dict) -> list[str]:
    """As the user: wait, up to ``buildkit_drain_timeout``, until the user's BuildKit runs no build (``drain``).

    Asked where the running socket listens: after a change of ``rootless_namespace`` that is still the old one.
    """
    address = state["socket"]["listening"] or socket_path(state["uid"], rootless.namespace)
    return [
        as_user(rootless.user, state["uid"], command)
        for command in drain_commands(
            f"{settings.bin_dir}/buildctl",
            address,
            settings.buildkit_drain_timeout,
            layout.SERVICE_UNIT,
            systemctl="systemctl --user",
        )
    ]


def _no_wait_reason(settings: Settings, needed: bool) -> str:
    if needed:
        return "buildkit_drain_timeout=0: builds in flight are not waited for"
    return f"nothing stops or restarts the user's running {layout.SERVICE_UNIT}"


def _mark(user: str, what: str, content: str = "") -> str:
    """The command that records that this package turned ``what`` on for ``user`` (with ``content``)."""
    return f"mkdir -p {layout.ROOTLESS_STATE_DIR} && echo {shlex.quote(content)} > {shlex.quote(marker_path(user, what))}"


def _unmark(user: str, what: str) -> str:
    return f"rm -f {shlex.quote(marker_path(user, what))} && rmdir --ignore-fail-on-non-empty {layout.ROOTLESS_STATE_DIR}"


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
    _apply(
        changes, resolved, rootless, state, tuple(file.path for file in user_files(resolved, rootless, state["home"]))
    )


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
    uid, home, quoted = state["uid"], state["home"], shlex.quote(user)
    manager = exists and state["manager"]
    units = [unit for unit in layout.UNITS.values() if state["units"][unit]["active"] or state["units"][unit]["enabled"]]
    present = [
        relative
        for relative in (*USER_UNIT_FILES, USER_BUILDKIT_CONFIG, USER_NERDCTL_CONFIG)
        if relative in state["files"]
    ]
    wait = resolved.host_lock_wait
    building = manager and state["units"][layout.SERVICE_UNIT]["active"]
    run_commands(
        name="Wait for the builds in flight on the user's BuildKit",
        commands=_wait_for_builds(resolved, rootless, state) if building else [],
        unneeded=_no_wait_reason(resolved, bool(building)),
    )
    run_commands(
        name="Stop and disable the user's units",
        commands=[user_systemctl(user, uid, f"disable --now {' '.join(units)}")] if manager and units else [],
        unneeded=f"no unit of {user}'s is enabled or active",
        lock_wait=wait,
    )
    paths = " ".join(shlex.quote(f"{home}/{relative}") for relative in present)
    folders = " ".join(shlex.quote(f"{home}/{folder}") for folder in USER_CONFIG_DIRS)
    good = shlex.quote(f"{home}/{USER_GOOD_DIR}")
    run_commands(
        name="Remove the user's units and configs",
        commands=[
            as_user(
                user,
                uid,
                f"rm -rf {paths} {good} && rmdir --ignore-fail-on-non-empty {folders} "
                f'"$(dirname {good})" 2>/dev/null; true',
            )
        ]
        if exists and (present or state["good_copies"])
        else [],
        unneeded=f"{user} has none of our files",
        lock_wait=wait,
    )
    run_commands(
        name="Reload the user's units",
        commands=[user_systemctl(user, uid, "daemon-reload")]
        if manager and set(present) & set(USER_UNIT_FILES)
        else [],
        unneeded="no unit file was removed",
        lock_wait=wait,
    )
    # Images belong to the user's subordinate IDs: only RootlessKit's namespace may remove them.
    rootlesskit = state["programs"].get("rootlesskit", "rootlesskit")
    data = " ".join(shlex.quote(f"{home}/{relative}") for relative in state["data"])
    run_commands(
        name="Purge the user's images and build cache",
        commands=[as_user(user, uid, f"{rootlesskit} rm -rf {data}")] if purge and exists and state["data"] else [],
        unneeded="nothing to purge" if purge else "images and build cache are kept (no purge)",
        lock_wait=wait,
    )
    run_commands(
        name="Lingering off",
        commands=[f"loginctl disable-linger {quoted}", _unmark(user, "linger")] if state["lingering_ours"] else [],
        unneeded="lingering was not turned on by pyinfra-nerdctl",
        lock_wait=wait,
    )
    # Only the range this package added, in whichever files it is still listed.
    added = state["subids_ours"]
    ranges = (
        [
            f"--del-sub{kind}s {added[0]}-{added[0] + added[1] - 1}"
            for kind in ("uid", "gid")
            if added in state[f"sub{kind}"]
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
        lock_wait=wait,
    )
