"""The build-host deploys: install or remove nerdctl, BuildKit socket-activated on containerd, or both."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError

from .. import layout
from ..facts import BuildHostState, ReleaseFiles, manifest_glob, manifest_path
from .changes import (
    DIR_MODE,
    Changes,
    dir_slots,
    file_slots,
    has_buildkit,
    has_nerdctl,
    plan_changes,
    plan_removal,
    wanted_version,
    watched_paths,
)
from .commands import leftovers_script
from .controller import remove_stale_partials
from .drain import drain_commands
from .operations import (
    fixed_steps,
    release_files,
    remember_script,
    remove_release_files,
    root_directory,
    run_commands,
    write_file,
)
from .releases import (
    BUILDKIT,
    NERDCTL,
    NERDCTL_FULL,
    Download,
    Release,
    ReleaseError,
    resolve_download,
    upstream_arch,
)
from .settings import SettingError, Settings, resolve_settings, settings_warnings, unknown_key_warnings
from .takeover import ForeignSetupError, Takeover, plan_takeover
from .verify import GOOD_DIR, check_build_path, check_paths


def _fail(message: str) -> DeployError:
    return DeployError(f"{host.name}: {message}")


def host_settings(overrides: dict[str, Any]) -> Settings:
    """This host's settings: keyword arguments, else host data, else defaults; checked."""
    for warning in unknown_key_warnings(host.data.dict()):
        logger.warning(f"{host.name}: {warning}")
    try:
        settings = resolve_settings(
            host.data.get, {key: value for key, value in overrides.items() if value is not None}
        )
    except SettingError as error:
        raise _fail(str(error)) from error
    for warning in settings_warnings(settings):
        logger.warning(f"{host.name}: {warning}")
    if settings.github_url.startswith("http://"):
        logger.warning(
            f"{host.name}: github_url={settings.github_url} is plain HTTP; "
            "archives are still checked against their SHA-256, but prefer HTTPS"
        )
    return settings


def _require_systemd(platform: dict) -> str:
    """The host's ``uname -m``, once systemd is known to be its init system."""
    if not platform["systemd"]:
        raise _fail("systemd is not the running init system; pyinfra-nerdctl needs a systemd host")
    return platform["machine"]


def _download(release: Release, settings: Settings, machine: str) -> Download:
    version = wanted_version(release, settings)
    try:
        arch = upstream_arch(machine, release, version)
        pin = settings.buildkit_sha256 if release is BUILDKIT else settings.nerdctl_sha256
        return resolve_download(release, version, arch, settings.github_url, pin)
    except ReleaseError as error:
        raise _fail(str(error)) from error


def _names(releases: tuple[Release, ...], settings: Settings) -> str:
    """``nerdctl 2.3.5 and BuildKit 0.12.5``."""
    return " and ".join(f"{release.label} {wanted_version(release, settings)}" for release in releases)


def _install_releases(
    changes: Changes, settings: Settings, releases: tuple[Release, ...], machine: str, retired
) -> None:
    """One verified install step for the outdated archives, named after what it installs on this host."""
    downloads = [_download(release, settings, machine) for release in changes.outdated]
    dest = _dest_of(releases[0], settings)  # one flavor per run: all its releases share a destination
    release_files(
        name=f"Install {_names(changes.outdated or releases, settings)} into {dest}",
        downloads=downloads,
        dest=dest,
        cache_dir=settings.release_cache_dir if settings.fetch_on_controller else None,
        retired=list(retired),
        installed=f"{_names(releases, settings)} installed in {dest}",
        lock_wait=settings.host_lock_wait,
    )


def _apply(changes: Changes, settings: Settings, possible: tuple[Release, ...], takeover: Takeover) -> None:
    """One operation per step a deploy of ``possible`` may need, in one order on every host (``fixed_steps``).

    Each step keeps its identity on every host, and one with nothing to do on this host is
    skipped there (``step_operation``), so the plan and the results name each operation with
    exactly the hosts it changes, across a mixed fleet. The state is already known
    from one fact, so the steps run plain commands rather than operations that would read
    it again: a converged host costs that one fact.
    """
    group = settings.buildkit_socket_group
    if has_buildkit(possible):
        run_commands(
            name=f"Group {group}" if group else "Group for buildkit_socket_group",
            commands=[f"groupadd --system {group}"] if changes.create_group else [],
            unneeded=f"group {group} exists" if group else "no buildkit_socket_group is set",
        )
    wrong_dirs = set(changes.dirs)
    for directory in dir_slots(possible):
        root_directory(name=f"Directory {directory}", path=directory, needed=directory in wrong_dirs)
    run_commands(
        name="Modes of the folders the install made",
        commands=[
            f"chown root:root {shlex.quote(d)} && chmod {DIR_MODE} {shlex.quote(d)}"
            for d in changes.created_dirs_to_fix
        ],
        unneeded=f"the folders the install made are root:root {DIR_MODE}",
    )
    if has_buildkit(possible):
        # Before our unit files replace theirs: `disable` needs the other setup's [Install] to find its links.
        # Its builds in flight first: our buildctl (just installed) asks each of its daemons.
        waits = [
            command
            for address in takeover.busy_sockets
            for command in _wait_for_builds(settings, address=address, unit=None)
        ]
        run_commands(
            name="Stop and disable another BuildKit setup",
            commands=waits + list(takeover.commands) if takeover.commands else [],
            unneeded="no other BuildKit setup on this host",
        )
    to_write = {file.path: file.content for file in changes.files}
    for path in file_slots(possible):
        write_file(name=f"Write {path}", path=path, content=to_write.get(path))
    if has_nerdctl(possible):
        run_commands(
            name=f"Remove {layout.DOCKER_ALIAS}",
            commands=[f"rm -f {layout.DOCKER_ALIAS}"] if changes.remove_alias else [],
            unneeded="no docker alias of ours to remove",
        )
    if not has_buildkit(possible):
        return
    # The new files are in place: if builds still run at the timeout, the host fails here, BuildKit
    # keeps its previous setup, and the next run finds the service older than its files and restarts it.
    run_commands(
        name=f"Wait for the builds in flight on {layout.SERVICE_UNIT}",
        commands=_wait_for_builds(settings) if changes.wait_for_builds else [],
        unneeded=_no_wait_reason(settings, changes),
    )
    run_commands(
        name=f"Stop, disable and remove our {layout.CONTAINERD_UNIT}",
        commands=[f"systemctl disable --now {layout.CONTAINERD_UNIT}", f"rm -f {layout.CONTAINERD_UNIT_PATH}"]
        if changes.retire_containerd
        else [],
        unneeded=f"no {layout.CONTAINERD_UNIT} of ours to retire",
    )
    run_commands(
        name="Reload systemd units",
        commands=["systemctl daemon-reload"] if changes.daemon_reload else [],
        unneeded="systemd has the current units",
    )
    # The socket first: enabling it reloads systemd, which the containerd steps then rely on.
    # Restarting the socket restarts a running service too (Requires=), so it is one or the other.
    _unit_control(layout.SOCKET_UNIT, changes.enable_socket, changes.start_socket, changes.restart_socket)
    if NERDCTL_FULL in possible:
        _unit_control(
            layout.CONTAINERD_UNIT, changes.enable_containerd, changes.start_containerd, changes.restart_containerd
        )
    run_commands(
        name=f"Restart {layout.SERVICE_UNIT}",
        # With buildkit_verify, the check that follows waits for it (and undoes what the daemon refuses).
        commands=[f"systemctl try-restart {'--no-block ' if settings.buildkit_verify else ''}{layout.SERVICE_UNIT}"]
        if changes.restart_service
        else [],
        unneeded=f"{layout.SERVICE_UNIT} runs what is on disk",
    )


def _wait_for_builds(
    settings: Settings,
    address: str = layout.BUILDKIT_ADDRESS,
    unit: str | None = layout.SERVICE_UNIT,
    bin_dir: str | None = None,
) -> list[str]:
    """The commands that wait, up to ``buildkit_drain_timeout``, until BuildKit at ``address`` runs no build.

    They ask with the ``buildctl`` in ``bin_dir`` (``settings.bin_dir`` unless given).
    """
    buildctl = f"{bin_dir or settings.bin_dir}/buildctl"
    return drain_commands(buildctl, address, settings.buildkit_drain_timeout, unit)


def _no_wait_reason(settings: Settings, changes: Changes) -> str:
    if changes.wait_for_builds:
        return "buildkit_drain_timeout=0: builds in flight are not waited for"
    return f"nothing stops or restarts a running {layout.SERVICE_UNIT}"


def _unit_control(unit: str, enable: bool, start: bool, restart: bool) -> None:
    """Enable ``unit``, start it, restart it when it runs what is no longer on disk: one step each."""
    run_commands(
        name=f"Enable {unit}", commands=[f"systemctl enable {unit}"] if enable else [], unneeded=f"{unit} is enabled"
    )
    run_commands(
        name=f"Start {unit}",
        commands=[f"systemctl start {unit}"] if start and not restart else [],
        unneeded=f"{unit} is active",
    )
    run_commands(
        name=f"Restart {unit}",
        commands=[f"systemctl restart {unit}"] if restart else [],
        unneeded=f"{unit} runs what is on disk",
    )


def _remove_leftovers(state: dict) -> None:
    """One step on every host, first: what killed runs left (uploads, scratch and unpack folders, partial copies)."""
    run_commands(
        name="Remove what killed runs left",
        commands=[leftovers_script(state["leftovers"])] if state["leftovers"] else [],
        unneeded="nothing left by a killed run",
    )


def _host_state(settings: Settings, possible: tuple[Release, ...]) -> dict | None:
    """The one ``BuildHostState`` fact; None when it could not be read (pyinfra has then failed this host)."""
    state = host.get_fact(
        BuildHostState,
        bin_dir=settings.bin_dir,
        paths=watched_paths(possible) + check_paths(settings, possible),
        group=settings.buildkit_socket_group,
        full_prefix=settings.full_prefix,
        full_manifests=manifest_glob(NERDCTL_FULL.name),
    )
    if state is None:
        logger.error(f"{host.name}: could not read the host's state; nothing was changed on it")
    return state


def _install(
    settings: Settings,
    releases: tuple[Release, ...],
    possible: tuple[Release, ...],
    retired: tuple[Release, ...] = (),
) -> None:
    """Install the outdated archives in one verified step, then converge the rest (``settings`` are checked).

    Everything is decided from one ``BuildHostState`` fact, so a converged host costs one remote command.
    ``possible`` are all the releases this deploy may install on any host (the steps it runs everywhere);
    ``retired`` are the other flavor's releases, whose files the install takes away.
    """
    state = _host_state(settings, possible)
    if state is None:
        return
    # nerdctl alone runs on any init; BuildKit's units need systemd.
    machine = _require_systemd(state) if releases != (NERDCTL,) else state["machine"]
    if not retired and state["full"]["managed"]:
        raise _fail("this host runs the nerdctl-full flavor: change it with install_build_host, not piece by piece")
    takeover = _takeover(settings, state, releases)
    changes = plan_changes(settings, takeover.state, releases)
    if settings.fetch_on_controller:
        remove_stale_partials(settings.release_cache_dir)
    with fixed_steps():
        _remove_leftovers(state)
        _install_releases(changes, settings, releases, machine, retired)
        run_commands(
            name="Record the versions of the installed binaries",
            commands=[remember_script(changes.remember_versions, settings.host_lock_wait)]
            if changes.remember_versions
            else [],
            unneeded="the recorded versions hold",
        )
        _apply(changes, settings, possible, takeover)
        check_build_path(settings, takeover.state, changes, releases, possible)


def _takeover(settings: Settings, state: dict, releases: tuple[Release, ...]) -> Takeover:
    """What takes over another BuildKit setup on this host; refused, with nothing changed, without buildkit_takeover."""
    if not has_buildkit(releases):
        return Takeover((), state)
    try:
        return plan_takeover(state, settings.buildkit_takeover)
    except ForeignSetupError as error:
        raise _fail(str(error)) from error


def _dest_of(release: Release, settings: Settings) -> str:
    """Where ``release`` was installed: ``full_prefix`` for the full archive, else ``bin_dir``."""
    return settings.full_prefix if release is NERDCTL_FULL else settings.bin_dir


def _refuse_full(settings: Settings, deploy_name: str) -> None:
    if settings.full:
        raise _fail(
            f"nerdctl_flavor='full' installs nerdctl and BuildKit together: use install_build_host, not {deploy_name}"
        )


def _remove_files(release: Release, settings: Settings) -> None:
    """The files the manifest of ``release`` lists: a file list is the proof that they are ours."""
    dest = _dest_of(release, settings)
    remove_release_files(
        name=f"Remove {release.label} from {dest}",
        release=release,
        dest=dest,
        installed_files=host.get_fact(ReleaseFiles, manifest=manifest_path(release.name, dest)),
        lock_wait=settings.host_lock_wait,
    )


def _remove(settings: Settings, possible: tuple[Release, ...], purge: bool = False) -> None:
    """Take away what a deploy of ``possible`` put on the host, and only what carries our marker or file list.

    One step per possible item, in one order on every host, skipped where there is nothing of ours.
    """
    state = _host_state(settings, possible)
    if state is None:
        return
    if NERDCTL_FULL not in possible and state["full"]["managed"]:
        raise _fail("this host runs the nerdctl-full flavor: remove it with remove_build_host, not piece by piece")
    removal = plan_removal(state, possible)
    with fixed_steps():
        _remove_leftovers(state)
        if has_buildkit(possible):
            _require_systemd(state)
            run_commands(
                name=f"Stop {layout.SERVICE_UNIT}",
                # The real buildkitd exits 1 on SIGTERM: leave no "failed" unit behind.
                commands=[
                    # The buildctl of the flavor the host runs, whichever the settings name.
                    *_wait_for_builds(
                        settings, bin_dir=f"{settings.full_prefix}/bin" if state["full"]["managed"] else None
                    ),
                    f"systemctl stop {layout.SERVICE_UNIT}",
                    f"systemctl reset-failed {layout.SERVICE_UNIT} || true",
                ]
                if removal.stop_service
                else [],
                unneeded=f"no running {layout.SERVICE_UNIT} of ours",
            )
            units = (layout.SOCKET_UNIT, layout.CONTAINERD_UNIT) if NERDCTL_FULL in possible else (layout.SOCKET_UNIT,)
            for unit in units:
                run_commands(
                    name=f"Stop and disable {unit}",
                    commands=[f"systemctl disable --now {unit}"] if unit in removal.stop_units else [],
                    unneeded=f"no enabled or active {unit} of ours",
                )
        for path in file_slots(possible):
            run_commands(
                name=f"Remove {path}",
                commands=[f"rm -f {path}"] if path in removal.files else [],
                unneeded=f"no {path} of ours",
            )
        if has_buildkit(possible):
            run_commands(
                name="Reload systemd units",
                commands=["systemctl daemon-reload"] if removal.daemon_reload else [],
                unneeded="no unit file was removed",
            )
        for directory in dir_slots(possible):
            run_commands(
                name=f"Remove {directory} if empty",
                commands=[f"rmdir {directory} 2>/dev/null || true"] if directory in removal.dirs else [],
                unneeded=f"nothing of ours was in {directory}",
            )
        if has_buildkit(possible):
            purged = purge and layout.BUILDKIT_STATE in state["paths"]
            run_commands(
                name=f"Remove {layout.BUILDKIT_STATE}",
                commands=[f"rm -rf {layout.BUILDKIT_STATE}"] if purged else [],
                unneeded=f"no {layout.BUILDKIT_STATE}" if purge else "BuildKit's data is kept (purge=False)",
            )
            run_commands(
                name=f"Remove {GOOD_DIR}",
                commands=[f"rm -rf {GOOD_DIR}"] if GOOD_DIR in state["paths"] else [],
                unneeded="no copies of a working BuildKit setup kept",
            )
        for release in (BUILDKIT, NERDCTL, NERDCTL_FULL):
            if release in possible:
                _remove_files(release, settings)


@deploy("Install nerdctl")
def install_nerdctl(**settings: Any) -> None:
    """The nerdctl release into ``bin_dir`` and ``/etc/nerdctl/nerdctl.toml``; no service is touched.

    Settings (keyword, else host data, else default) are listed in the README.

    .. code:: python

        install_nerdctl(nerdctl_version="2.3.5", containerd_namespace="k8s.io")
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "install_nerdctl")
    _install(resolved, (NERDCTL,), possible=(NERDCTL,))


@deploy("Install BuildKit")
def install_buildkit(**settings: Any) -> None:
    """BuildKit's binaries, its config, and its socket-activated units.

    .. code:: python

        install_buildkit(buildkit_version="0.12.5", buildkit_socket_group="buildkit")
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "install_buildkit")
    _install(resolved, (BUILDKIT,), possible=(BUILDKIT,))


@deploy("Install the nerdctl and BuildKit build host")
def install_build_host(**settings: Any) -> None:
    """nerdctl and BuildKit on one containerd and namespace; both archives verified before either lands.

    With ``nerdctl_flavor="full"``, the nerdctl-full archive brings containerd too, under ``full_prefix``.

    .. code:: python

        install_build_host(containerd_address="/run/k3s/containerd/containerd.sock",
                           containerd_namespace="k8s.io")
    """
    resolved = host_settings(settings)
    possible = (NERDCTL, BUILDKIT, NERDCTL_FULL)  # the flavor may differ from host to host
    if resolved.full:
        _install(resolved, (NERDCTL_FULL,), possible, retired=(NERDCTL, BUILDKIT))
    else:
        _install(resolved, (NERDCTL, BUILDKIT), possible, retired=(NERDCTL_FULL,))


@deploy("Remove nerdctl")
def remove_nerdctl(**settings: Any) -> None:
    """nerdctl's binaries, ``/etc/nerdctl`` and the docker alias, gone.

    .. code:: python

        remove_nerdctl(bin_dir="/opt/bin")
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "remove_nerdctl")
    _remove(resolved, (NERDCTL,))


@deploy("Remove BuildKit")
def remove_buildkit(purge: bool = False, **settings: Any) -> None:
    """BuildKit stopped and disabled; its units, config and binaries gone; ``/var/lib/buildkit`` too with ``purge``.

    .. code:: python

        remove_buildkit(purge=True)
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "remove_buildkit")
    _remove(resolved, (BUILDKIT,), purge)


@deploy("Remove the nerdctl and BuildKit build host")
def remove_build_host(purge: bool = False, **settings: Any) -> None:
    """Everything ``install_build_host`` put on the host, removed (BuildKit's data kept unless ``purge``).

    Whatever the flavor: with a full archive, containerd is stopped and disabled too, and
    every file of the archive goes.

    .. code:: python

        remove_build_host(purge=True)
    """
    _remove(host_settings(settings), (NERDCTL, BUILDKIT, NERDCTL_FULL), purge)
