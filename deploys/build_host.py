"""The build-host deploys: install or remove nerdctl, BuildKit socket-activated on containerd, or both."""

from __future__ import annotations

from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd

from ..facts import BuildHostPlatform, BuildHostState, ReleaseFiles, manifest_glob, manifest_path
from . import rendering
from .changes import Changes, plan_changes, wanted_version, watched_paths
from .controller import cached_archive
from .operations import release_files, remove_release_files, root_directory, write_file
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
from .settings import SettingError, Settings, resolve_settings, unknown_key_warnings

BUILDKIT_STATE = "/var/lib/buildkit"


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


def _controller_copy(download: Download, settings: Settings) -> str:
    """The controller's verified copy of ``download``: fetched once per fleet, uploaded per host."""
    try:
        return str(cached_archive(download, settings.release_cache_dir))
    except ReleaseError as error:
        raise _fail(str(error)) from error


def _apply(changes: Changes, settings: Settings) -> None:
    """Operations for ``changes`` only: a converged host gets none.

    The state is already known from one fact, so files, folders and units are
    handled by plain commands rather than operations that would read it again;
    the rare group creation and alias removal use pyinfra's own operations.
    """
    if changes.create_group:
        group = settings.buildkit_socket_group
        server.group(name=f"Group {group}", group=group, system=True)
    for directory in changes.dirs:
        root_directory(name=f"Directory {directory}", path=directory)
    for file in changes.files:
        write_file(name=f"Write {file.path}", path=file.path, content=file.content)
    if changes.remove_alias:
        files.file(name=f"No {rendering.DOCKER_ALIAS}", path=rendering.DOCKER_ALIAS, present=False)
    if changes.retire_containerd:
        server.shell(
            name=f"Stop, disable and remove the full archive's {rendering.CONTAINERD_UNIT}",
            commands=[
                f"systemctl disable --now {rendering.CONTAINERD_UNIT}",
                f"rm -f {rendering.CONTAINERD_UNIT_PATH}",
            ],
        )
    if changes.daemon_reload:
        systemd.daemon_reload(name="Reload systemd units")
    # The socket first: enabling it reloads systemd, which the containerd steps then rely on.
    # Restarting the socket restarts a running service too (Requires=), so it is one or the other.
    _unit_control(rendering.SOCKET_UNIT, changes.enable_socket, changes.start_socket, changes.restart_socket)
    _unit_control(
        rendering.CONTAINERD_UNIT, changes.enable_containerd, changes.start_containerd, changes.restart_containerd
    )
    if changes.restart_service:
        server.shell(
            name=f"Restart {rendering.SERVICE_UNIT}", commands=[f"systemctl try-restart {rendering.SERVICE_UNIT}"]
        )


def _unit_control(unit: str, enable: bool, start: bool, restart: bool) -> None:
    """Enable ``unit`` if asked, then start it, or restart it when it runs what is no longer on disk."""
    if enable or start or restart:
        action = "restart" if restart else "start"
        server.shell(
            name=f"Enable and {action} {unit}",
            commands=[*([f"systemctl enable {unit}"] if enable else []), f"systemctl {action} {unit}"],
        )


def _install(settings: Settings, releases: tuple[Release, ...], retired: tuple[Release, ...] = ()) -> None:
    """Install the outdated archives in one verified step, then converge the rest (``settings`` are checked).

    Everything is decided from one ``BuildHostState`` fact, so a converged host costs one remote command.
    ``retired`` are the other flavor's releases, whose files the install takes away.
    """
    state = host.get_fact(
        BuildHostState,
        bin_dir=settings.bin_dir,
        paths=watched_paths(settings, releases),
        group=settings.buildkit_socket_group,
        full_prefix=settings.full_prefix,
        full_manifests=manifest_glob(NERDCTL_FULL.name),
    )
    # nerdctl alone runs on any init; BuildKit's units need systemd.
    machine = _require_systemd(state) if releases != (NERDCTL,) else state["machine"]
    if not retired and state["full"]["managed"]:
        raise _fail("this host runs the nerdctl-full flavor: change it with install_build_host, not piece by piece")
    changes = plan_changes(settings, state, releases)
    downloads = [_download(release, settings, machine) for release in changes.outdated]
    wanted = ", ".join(f"{release.label} {wanted_version(release, settings)}" for release in releases)
    dest = _dest_of(releases[0], settings)  # one flavor per run: all its releases share a destination
    release_files(
        name=f"Install {wanted} into {dest}",
        downloads=downloads,
        dest=dest,
        uploads=[_controller_copy(download, settings) for download in downloads]
        if settings.fetch_on_controller
        else [],
        retired=list(retired),
    )
    _apply(changes, settings)


def _dest_of(release: Release, settings: Settings) -> str:
    """Where ``release`` was installed: ``full_prefix`` for the full archive, else ``bin_dir``."""
    return settings.full_prefix if release is NERDCTL_FULL else settings.bin_dir


def _refuse_full(settings: Settings, deploy_name: str) -> None:
    if settings.full:
        raise _fail(
            f"nerdctl_flavor='full' installs nerdctl and BuildKit together: use install_build_host, not {deploy_name}"
        )


def _remove_files(release: Release, settings: Settings) -> None:
    dest = _dest_of(release, settings)
    remove_release_files(
        name=f"Remove {release.label} from {dest}",
        release=release,
        dest=dest,
        installed_files=host.get_fact(
            ReleaseFiles, manifest=manifest_path(release.name, dest), bin_dir=dest, fallback=release.version_binaries
        ),
    )


@deploy("Install nerdctl")
def install_nerdctl(**settings: Any) -> None:
    """The nerdctl release into ``bin_dir`` and ``/etc/nerdctl/nerdctl.toml``; no service is touched.

    Settings (keyword, else host data, else default) are listed in the README.

    .. code:: python

        install_nerdctl(nerdctl_version="2.3.5", containerd_namespace="k8s.io")
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "install_nerdctl")
    _install(resolved, (NERDCTL,))


@deploy("Install BuildKit")
def install_buildkit(**settings: Any) -> None:
    """BuildKit's binaries, its config, and its socket-activated units.

    .. code:: python

        install_buildkit(buildkit_version="0.12.5", buildkit_socket_group="buildkit")
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "install_buildkit")
    _install(resolved, (BUILDKIT,))


@deploy("Install the nerdctl and BuildKit build host")
def install_build_host(**settings: Any) -> None:
    """nerdctl and BuildKit on one containerd and namespace; both archives verified before either lands.

    With ``nerdctl_flavor="full"``, the nerdctl-full archive brings containerd too, under ``full_prefix``.

    .. code:: python

        install_build_host(containerd_address="/run/k3s/containerd/containerd.sock",
                           containerd_namespace="k8s.io")
    """
    resolved = host_settings(settings)
    if resolved.full:
        _install(resolved, (NERDCTL_FULL,), retired=(NERDCTL, BUILDKIT))
    else:
        _install(resolved, (NERDCTL, BUILDKIT), retired=(NERDCTL_FULL,))


def _remove_nerdctl_config(settings: Settings) -> None:
    files.file(name=f"No {rendering.DOCKER_ALIAS}", path=rendering.DOCKER_ALIAS, present=False)
    files.directory(name="No /etc/nerdctl", path="/etc/nerdctl", present=False)


def _remove_units(settings: Settings, purge: bool, full_installed: bool = False) -> None:
    """Stop and disable BuildKit (and the full archive's containerd), remove their units and configs, reload once."""
    _require_systemd(host.get_fact(BuildHostPlatform))
    systemd.service(name=f"Stop {rendering.SERVICE_UNIT}", service=rendering.SERVICE_UNIT, running=False)
    stopped = [rendering.SOCKET_UNIT] + ([rendering.CONTAINERD_UNIT] if full_installed else [])
    for unit in stopped:
        systemd.service(name=f"Stop and disable {unit}", service=unit, running=False, enabled=False)
    unit_files = [rendering.SOCKET_PATH, rendering.SERVICE_PATH]
    unit_files += [rendering.CONTAINERD_UNIT_PATH] if full_installed else []
    removed = [files.file(name=f"No {path}", path=path, present=False) for path in unit_files]
    if any(unit.will_change for unit in removed):
        systemd.daemon_reload(name="Reload systemd units")
    files.directory(name="No /etc/buildkit", path="/etc/buildkit", present=False)
    if full_installed and settings.containerd_config is not None:
        files.file(name=f"No {rendering.CONTAINERD_CONFIG}", path=rendering.CONTAINERD_CONFIG, present=False)
    if purge:
        files.directory(name=f"No {BUILDKIT_STATE}", path=BUILDKIT_STATE, present=False)


@deploy("Remove nerdctl")
def remove_nerdctl(**settings: Any) -> None:
    """nerdctl's binaries, ``/etc/nerdctl`` and the docker alias, gone.

    .. code:: python

        remove_nerdctl(bin_dir="/opt/bin")
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "remove_nerdctl")
    _remove_files(NERDCTL, resolved)
    _remove_nerdctl_config(resolved)


@deploy("Remove BuildKit")
def remove_buildkit(purge: bool = False, **settings: Any) -> None:
    """BuildKit stopped and disabled; its units, config and binaries gone; ``/var/lib/buildkit`` too with ``purge``.

    .. code:: python

        remove_buildkit(purge=True)
    """
    resolved = host_settings(settings)
    _refuse_full(resolved, "remove_buildkit")
    _remove_units(resolved, purge)
    _remove_files(BUILDKIT, resolved)


@deploy("Remove the nerdctl and BuildKit build host")
def remove_build_host(purge: bool = False, **settings: Any) -> None:
    """Everything ``install_build_host`` put on the host, removed (BuildKit's data kept unless ``purge``).

    Whatever the flavor: with a full archive, containerd is stopped and disabled too, and
    every file of the archive goes.

    .. code:: python

        remove_build_host(purge=True)
    """
    resolved = host_settings(settings)
    # The full archive's manifest, not the settings, says whether containerd is ours to remove.
    full_files = host.get_fact(
        ReleaseFiles, manifest=manifest_path(NERDCTL_FULL.name, resolved.full_prefix), bin_dir=resolved.full_prefix
    )
    _remove_units(resolved, purge, full_installed=resolved.full or bool(full_files))
    for release in (BUILDKIT, NERDCTL, NERDCTL_FULL):
        _remove_files(release, resolved)
    _remove_nerdctl_config(resolved)
