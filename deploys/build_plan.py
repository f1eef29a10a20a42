"""The build-host deploys' plans: every step a deploy of ``possible`` runs, in order (pure: no host).

A deploy reads one ``BuildHostState`` fact, plans (``changes.plan_changes``, ``plan_removal``),
and carries out the steps these functions return (``steps.carry_out``). Every host of a
deploy gets the same steps in the same order, those with nothing to do saying why, so the
plan lines up across a mixed fleet; the steps run plain commands decided from that one
fact, so a converged host costs that one remote command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .. import layout
from ..certs import Authority
from ..facts.types import BuildHostStateDict
from . import commands as sh
from .changes import (
    DIR_MODE,
    FILE_MODE,
    Changes,
    Removal,
    dir_mode,
    dir_slots,
    file_slots,
    has_buildkit,
    has_nerdctl,
    wanted_version,
)
from .drain import drain_commands
from .operations import remember_script
from .releases import BUILDKIT, NERDCTL, NERDCTL_FULL, Download, Release
from .settings import Settings
from .steps import Step, check, run
from .takeover import Takeover
from .verify import GOOD_DIR, check_skip_reason, containerd_missing_warning, verify_script


def dest_of(release: Release, settings: Settings) -> str:
    """Where ``release`` is installed: ``full_prefix`` for the full archive, else ``bin_dir``."""
    return settings.full_prefix if release is NERDCTL_FULL else settings.bin_dir


def _names(releases: Sequence[Release], settings: Settings) -> str:
    """``nerdctl 2.3.5 and BuildKit 0.12.5``."""
    return " and ".join(f"{release.label} {wanted_version(release, settings)}" for release in releases)


def ca_step(settings: Settings, authority: Authority | None) -> Step:
    """First in a deploy that may install BuildKit, before any host is touched: a new CA (made in memory
    while planning, ``certs.planned_ca``) written into ``buildkit_ca_dir`` on the controller; ``authority``:
    the CA a remote builder's files are signed by, None for a host that is none."""
    ca_dir = settings.buildkit_ca_dir
    in_place = f"the fleet's CA is in {ca_dir}"
    return Step(
        f"Create the fleet's CA in {ca_dir} on the controller",
        kind="ca",
        unneeded=in_place if authority is not None else "no buildkit_remote_address: no CA is needed",
        options={"ca_dir": ca_dir, "authority": None if authority is None or authority.saved else authority},
    )


def leftovers_step(state: BuildHostStateDict) -> Step:
    """First on the host: what killed runs left (uploads, scratch and unpack folders, partial copies)."""
    leftovers = state["leftovers"]
    return run(
        "Remove what killed runs left",
        [sh.leftovers_script(leftovers)] if leftovers else [],
        "nothing left by a killed run",
    )


def wait_for_builds(
    settings: Settings,
    address: str = layout.BUILDKIT_ADDRESS,
    unit: str | None = layout.SERVICE_UNIT,
    bin_dir: str | None = None,
) -> list[str]:
    """The commands that wait, up to ``buildkit_drain_timeout``, until BuildKit at ``address`` runs no build.

    They ask with the ``buildctl`` in ``bin_dir`` (``settings.bin_dir`` unless given).
    """
    return drain_commands(f"{bin_dir or settings.bin_dir}/buildctl", address, settings.buildkit_drain_timeout, unit)


def install_steps(
    settings: Settings,
    state: BuildHostStateDict,
    changes: Changes,
    takeover: Takeover,
    releases: tuple[Release, ...],
    possible: tuple[Release, ...],
    retired: tuple[Release, ...],
    downloads: Sequence[Download],
    authority: Authority | None,
) -> list[Step]:
    """Every step of an install of ``releases`` by a deploy of ``possible``; ``downloads``: the outdated archives;
    ``authority``: the CA of a remote builder's files (``ca_step``)."""
    dest = dest_of(releases[0], settings)  # one flavor per run: all its releases share a destination
    install = Step(
        f"Install {_names(changes.outdated or releases, settings)} into {dest}",
        unneeded=f"{_names(releases, settings)} installed in {dest}",
        kind="release",
        lock_wait=settings.host_lock_wait,
        options={
            "downloads": tuple(downloads),
            "dest": dest,
            "cache_dir": settings.release_cache_dir if settings.fetch_on_controller else None,
            "retired": retired,
        },
    )
    remember = run(
        "Record the versions of the installed binaries",
        [remember_script(changes.remember_versions, settings.host_lock_wait)] if changes.remember_versions else [],
        "the recorded versions hold",
    )
    return [
        *([ca_step(settings, authority)] if has_buildkit(possible) else []),
        leftovers_step(state),
        install,
        remember,
        *_setup_steps(changes, settings, possible, takeover),
        *_unit_steps(changes, settings, possible),
        *_check_steps(settings, takeover.state, changes, releases, possible),
        *_remote_end_steps(changes, possible),
    ]


def _setup_steps(changes: Changes, settings: Settings, possible: tuple[Release, ...], takeover: Takeover) -> list[Step]:
    """The group, the folders, another setup taken over, and the files."""
    group = settings.buildkit_socket_group
    group_step = run(
        f"Group {group}" if group else "Group for buildkit_socket_group",
        [sh.groupadd(group)] if changes.create_group and group else [],
        f"group {group} exists" if group else "no buildkit_socket_group is set",
    )
    return [
        *([group_step] if has_buildkit(possible) else []),
        *_folder_steps(changes, possible),
        *([_takeover_step(settings, takeover)] if has_buildkit(possible) else []),
        *_file_steps(changes, possible),
    ]


def _folder_steps(changes: Changes, possible: tuple[Release, ...]) -> list[Step]:
    """Each managed folder, then the modes of the folders the install made."""
    folders = [
        Step(
            f"Directory {directory}",
            (sh.root_directory(directory, dir_mode(directory)),) if directory in changes.dirs else (),
            f"{directory} is as wanted",
            kind="directory",
            options={"path": directory, "mode": dir_mode(directory)},
        )
        for directory in dir_slots(possible)
    ]
    modes = run(
        "Modes of the folders the install made",
        [sh.root_owned(directory, DIR_MODE) for directory in changes.created_dirs_to_fix],
        f"the folders the install made are root:root {DIR_MODE}",
    )
    return [*folders, modes]


def _file_steps(changes: Changes, possible: tuple[Release, ...]) -> list[Step]:
    """Each managed file written where it differs, then a docker alias of ours that is no longer wanted removed."""
    to_write = {file.path: file for file in changes.files}
    files = [
        Step(
            f"Write {path}",
            kind="write",
            unneeded=f"{path} is as wanted",
            options={
                "path": path,
                "content": to_write[path].content if path in to_write else None,
                "mode": to_write[path].mode if path in to_write else FILE_MODE,
            },
        )
        for path in file_slots(possible)
    ]
    if not has_nerdctl(possible):
        return files
    alias = run(
        f"Remove {layout.DOCKER_ALIAS}",
        [sh.remove_file(layout.DOCKER_ALIAS)] if changes.remove_alias else [],
        "no docker alias of ours to remove",
    )
    return [*files, alias]


def _takeover_step(settings: Settings, takeover: Takeover) -> Step:
    """Before our unit files replace theirs: ``disable`` needs the other setup's [Install] to find its links.

    Its builds in flight first: our buildctl (just installed) asks each of its daemons.
    """
    waits = [
        command
        for address in takeover.busy_sockets
        for command in wait_for_builds(settings, address=address, unit=None)
    ]
    return run(
        "Stop and disable another BuildKit setup",
        waits + list(takeover.commands) if takeover.commands else [],
        "no other BuildKit setup on this host",
    )


def no_wait_reason(needed: bool, running: str) -> str:
    """Why a drain step waits for nothing: the timeout is 0, or nothing stops or restarts ``running``."""
    if needed:
        return "buildkit_drain_timeout=0: builds in flight are not waited for"
    return f"nothing stops or restarts {running}"


def _unit_steps(changes: Changes, settings: Settings, possible: tuple[Release, ...]) -> list[Step]:
    """The drain, the units reloaded, enabled, started and restarted: only for a deploy that may install BuildKit."""
    if not has_buildkit(possible):
        return []
    # The new files are in place: if builds still run at the timeout, the host fails here, BuildKit
    # keeps its previous setup, and the next run finds the service older than its files and restarts it.
    steps = [
        run(
            f"Wait for the builds in flight on {layout.SERVICE_UNIT}",
            wait_for_builds(settings) if changes.wait_for_builds else [],
            no_wait_reason(changes.wait_for_builds, f"a running {layout.SERVICE_UNIT}"),
        ),
        run(
            f"Stop, disable and remove our {layout.CONTAINERD_UNIT}",
            [sh.systemctl("disable", "--now", layout.CONTAINERD_UNIT), sh.remove_file(layout.CONTAINERD_UNIT_PATH)]
            if changes.retire_containerd
            else [],
            f"no {layout.CONTAINERD_UNIT} of ours to retire",
        ),
        run(
            "Reload systemd units",
            [sh.systemctl("daemon-reload")] if changes.daemon_reload else [],
            "systemd has the current units",
        ),
        # The socket first: enabling it reloads systemd, which the containerd steps then rely on.
        # Restarting the socket restarts a running service too (Requires=), so it is one or the other.
        *_unit_control(layout.SOCKET_UNIT, changes.enable_socket, changes.start_socket, changes.restart_socket),
    ]
    if NERDCTL_FULL in possible:
        steps += _unit_control(
            layout.CONTAINERD_UNIT, changes.enable_containerd, changes.start_containerd, changes.restart_containerd
        )
    start = run(
        f"Start {layout.SERVICE_UNIT}",
        # With buildkit_verify, the check that follows waits for it (and undoes a unit the daemon refuses: a port in use).
        [sh.systemctl("start", *no_block(settings), layout.SERVICE_UNIT)] if changes.start_service else [],
        f"{layout.SERVICE_UNIT} runs, or starts on demand",
    )
    return [*steps, _restart_service_step(changes, settings), start]


def no_block(settings: Settings) -> tuple[str, ...]:
    """``--no-block`` for a start or restart that the check then waits for (``buildkit_verify``)."""
    return ("--no-block",) if settings.buildkit_verify else ()


def _remote_end_steps(changes: Changes, possible: tuple[Release, ...]) -> list[Step]:
    """After the check, which may go back to the previous units: a remote builder's service enabled at boot (TCP
    clients cannot start it), or for a host that is none, the service disabled and our TLS files gone."""
    if not has_buildkit(possible):
        return []
    unit = layout.SERVICE_UNIT
    files = [sh.remove_file(path) for path in changes.remove_tls if path != layout.BUILDKIT_TLS_DIR]
    folder = [sh.remove_if_empty(layout.BUILDKIT_TLS_DIR)] if layout.BUILDKIT_TLS_DIR in changes.remove_tls else []
    return [
        run(
            f"Enable {unit}",
            [sh.systemctl("enable", unit)] if changes.enable_service else [],
            f"{unit} is enabled, or starts on demand",
        ),
        run(
            f"Disable {unit}",
            [sh.systemctl("disable", unit)] if changes.disable_service else [],
            f"{unit} is not enabled",
        ),
        run("Remove the server's TLS files", files + folder, "no TLS files of a remote builder to remove"),
    ]


def _restart_service_step(changes: Changes, settings: Settings) -> Step:
    """Restart a running ``buildkit.service`` whose binary, config or unit changed since it started."""
    # With buildkit_verify, the check that follows waits for it (and undoes what the daemon refuses).
    return run(
        f"Restart {layout.SERVICE_UNIT}",
        [sh.systemctl("try-restart", *no_block(settings), layout.SERVICE_UNIT)] if changes.restart_service else [],
        f"{layout.SERVICE_UNIT} runs what is on disk",
    )


def _unit_control(unit: str, enable: bool, start: bool, restart: bool) -> list[Step]:
    """Enable ``unit``, start it, restart it when it runs what is no longer on disk: one step each."""
    return [
        run(f"Enable {unit}", [sh.systemctl("enable", unit)] if enable else [], f"{unit} is enabled"),
        run(f"Start {unit}", [sh.systemctl("start", unit)] if start and not restart else [], f"{unit} is active"),
        run(f"Restart {unit}", [sh.systemctl("restart", unit)] if restart else [], f"{unit} runs what is on disk"),
    ]


def _check_steps(
    settings: Settings,
    state: BuildHostStateDict,
    changes: Changes,
    releases: Sequence[Release],
    possible: tuple[Release, ...],
) -> list[Step]:
    """After a change, prove that BuildKit answers (``buildkit_verify``): one step on every host of a deploy that may install BuildKit."""
    if not has_buildkit(possible):
        return []
    missing = has_buildkit(tuple(releases)) and containerd_missing_warning(settings, state) is not None
    return [
        check(
            "Check that BuildKit answers with the containerd worker",
            verify_script(
                settings, state["units"]["service"]["active"] or settings.buildkit_remote_address is not None
            ),
            check_skip_reason(settings, changes, containerd_missing=missing),
        )
    ]


def removal_steps(
    settings: Settings,
    state: BuildHostStateDict,
    removal: Removal,
    possible: tuple[Release, ...],
    purge: bool,
    installed_files: Mapping[Release, Sequence[str]],
) -> list[Step]:
    """Every step of a removal of ``possible``, one per item, in one order on every host.

    ``installed_files``: what each possible release's file list holds (``ReleaseFiles``).
    """
    steps = [leftovers_step(state), *_stop_steps(settings, state, removal, possible)]
    steps += [
        run(f"Remove {path}", [sh.remove_file(path)] if path in removal.files else [], f"no {path} of ours")
        for path in file_slots(possible)
    ]
    if has_buildkit(possible):
        steps.append(
            run(
                "Reload systemd units",
                [sh.systemctl("daemon-reload")] if removal.daemon_reload else [],
                "no unit file was removed",
            )
        )
    steps += [
        run(
            f"Remove {directory} if empty",
            [sh.remove_if_empty(directory)] if directory in removal.dirs else [],
            f"nothing of ours was in {directory}",
        )
        # A folder inside another goes first (the TLS folder in /etc/buildkit).
        for directory in sorted(dir_slots(possible), key=lambda directory: -directory.count("/"))
    ]
    steps += _purge_steps(state, possible, purge)
    return steps + [
        _remove_files_step(release, settings, installed_files[release])
        for release in (BUILDKIT, NERDCTL, NERDCTL_FULL)
        if release in possible
    ]


def _stop_steps(
    settings: Settings, state: BuildHostStateDict, removal: Removal, possible: tuple[Release, ...]
) -> list[Step]:
    """BuildKit's builds in flight waited for, its service stopped, its units stopped and disabled."""
    if not has_buildkit(possible):
        return []
    # The buildctl of the flavor the host runs, whichever the settings name.
    bin_dir = f"{settings.full_prefix}/bin" if state["full"]["managed"] else None
    stop = [
        *wait_for_builds(settings, bin_dir=bin_dir),
        sh.systemctl("stop", layout.SERVICE_UNIT),
        # The real buildkitd exits 1 on SIGTERM: leave no "failed" unit behind.
        f"{sh.systemctl('reset-failed', layout.SERVICE_UNIT)} || true",
    ]
    disable = [sh.systemctl("disable", layout.SERVICE_UNIT)] if removal.disable_service else []
    steps = [
        run(
            f"Stop {layout.SERVICE_UNIT}",
            (stop if removal.stop_service else []) + disable,
            f"no running {layout.SERVICE_UNIT} of ours",
        )
    ]
    units = (layout.SOCKET_UNIT, layout.CONTAINERD_UNIT) if NERDCTL_FULL in possible else (layout.SOCKET_UNIT,)
    return steps + [
        run(
            f"Stop and disable {unit}",
            [sh.systemctl("disable", "--now", unit)] if unit in removal.stop_units else [],
            f"no enabled or active {unit} of ours",
        )
        for unit in units
    ]


def _purge_steps(state: BuildHostStateDict, possible: tuple[Release, ...], purge: bool) -> list[Step]:
    """BuildKit's data (with ``purge``) and the copies of its last working setup."""
    if not has_buildkit(possible):
        return []
    purged = purge and layout.BUILDKIT_STATE in state["paths"]
    return [
        run(
            f"Remove {layout.BUILDKIT_STATE}",
            [sh.remove_tree(layout.BUILDKIT_STATE)] if purged else [],
            f"no {layout.BUILDKIT_STATE}" if purge else "BuildKit's data is kept (purge=False)",
        ),
        run(
            f"Remove {GOOD_DIR}",
            [sh.remove_tree(GOOD_DIR)] if GOOD_DIR in state["paths"] else [],
            "no copies of a working BuildKit setup kept",
        ),
    ]


def _remove_files_step(release: Release, settings: Settings, installed_files: Sequence[str]) -> Step:
    """The files the manifest of ``release`` lists: a file list is the proof that they are ours."""
    dest = dest_of(release, settings)
    return Step(
        f"Remove {release.label} from {dest}",
        kind="remove_release",
        lock_wait=settings.host_lock_wait,
        unneeded=f"no file list of {release.name} under {dest}: nothing of it is ours to remove",
        options={"release": release, "dest": dest, "installed_files": tuple(installed_files)},
    )
