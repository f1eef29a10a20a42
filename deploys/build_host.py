"""The build-host deploys: install or remove nerdctl, BuildKit socket-activated on containerd, or both."""

from __future__ import annotations

from io import StringIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd

from ..facts import BuildHostPlatform, BuildkitUnitFreshness, BuildkitVersion, NerdctlVersion, ReleaseFiles
from . import rendering
from .operations import manifest_path, release_files, remove_release_files
from .releases import (
    BUILDKIT,
    NERDCTL,
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


def _require_systemd() -> str:
    """The host's ``uname -m``, once systemd is known to be its init system."""
    platform = host.get_fact(BuildHostPlatform)
    if not platform["systemd"]:
        raise _fail("systemd is not the running init system; pyinfra-nerdctl needs a systemd host")
    return platform["machine"]


def _wanted_version(release: Release, settings: Settings) -> str:
    return getattr(settings, f"{release.name}_version")


def _installed_version(release: Release, settings: Settings) -> str | None:
    """What the host runs; for BuildKit, None unless buildkitd and buildctl agree."""
    if release is NERDCTL:
        return host.get_fact(NerdctlVersion, bin_dir=settings.bin_dir)
    versions = host.get_fact(BuildkitVersion, bin_dir=settings.bin_dir)
    return versions["buildkitd"] if versions["buildkitd"] == versions["buildctl"] else None


def _download(release: Release, settings: Settings, machine: str) -> Download:
    version = _wanted_version(release, settings)
    try:
        arch = upstream_arch(machine, release, version)
        return resolve_download(
            release, version, arch, settings.github_url, getattr(settings, f"{release.name}_sha256")
        )
    except ReleaseError as error:
        raise _fail(str(error)) from error


def _config_file(path: str, content: str) -> Any:
    return files.put(name=f"Write {path}", src=StringIO(content), dest=path, user="root", group="root", mode="644")


def _config_dir(path: str) -> None:
    files.directory(name=f"Directory {path}", path=path, user="root", group="root", mode="755")


def _configure_nerdctl(settings: Settings) -> None:
    _config_dir("/etc/nerdctl")
    _config_file(rendering.NERDCTL_CONFIG, rendering.nerdctl_toml(settings))
    if settings.nerdctl_docker_alias:
        _config_file(rendering.DOCKER_ALIAS, rendering.docker_alias(settings))
    else:
        files.file(name=f"No {rendering.DOCKER_ALIAS}", path=rendering.DOCKER_ALIAS, present=False)


def _configure_buildkit(settings: Settings, binaries_change: bool) -> None:
    if settings.buildkit_socket_group:
        server.group(name=f"Group {settings.buildkit_socket_group}", group=settings.buildkit_socket_group, system=True)
    _config_dir("/etc/buildkit")
    config = _config_file(rendering.BUILDKIT_CONFIG, rendering.buildkitd_toml(settings))
    socket_unit = _config_file(
        f"{rendering.UNIT_DIR}/{rendering.SOCKET_UNIT}", rendering.buildkit_socket_unit(settings)
    )
    service_unit = _config_file(
        f"{rendering.UNIT_DIR}/{rendering.SERVICE_UNIT}", rendering.buildkit_service_unit(settings)
    )
    # Freshness also catches what an interrupted earlier run wrote but never reloaded or restarted.
    freshness = host.get_fact(BuildkitUnitFreshness, bin_dir=settings.bin_dir)
    socket_changes = socket_unit.will_change or freshness["socket"]["stale"]
    if (
        socket_unit.will_change
        or service_unit.will_change
        or any(unit["needs_daemon_reload"] for unit in freshness.values())
    ):
        systemd.daemon_reload(name="Reload systemd units")
    # Restarting the socket restarts a running service too (Requires=), so restart one or the other.
    systemd.service(
        name=f"Enable and start {rendering.SOCKET_UNIT}",
        service=rendering.SOCKET_UNIT,
        running=True,
        enabled=True,
        restarted=socket_changes,
    )
    service_inputs_change = binaries_change or config.will_change or service_unit.will_change
    if not socket_changes and (service_inputs_change or freshness["service"]["stale"]):
        systemd.service(
            name=f"Restart {rendering.SERVICE_UNIT} if it runs",
            service=rendering.SERVICE_UNIT,
            running=None,
            restarted=True,
        )


def _install(releases: tuple[Release, ...], overrides: dict[str, Any]) -> None:
    """Check every input, install the outdated archives in one verified step, then configure."""
    settings = host_settings(overrides)
    machine = _require_systemd()
    outdated = [
        release for release in releases if _installed_version(release, settings) != _wanted_version(release, settings)
    ]
    downloads = [_download(release, settings, machine) for release in outdated]
    wanted = ", ".join(f"{release.label} {_wanted_version(release, settings)}" for release in releases)
    release_files(name=f"Install {wanted} into {settings.bin_dir}", downloads=downloads, bin_dir=settings.bin_dir)
    if NERDCTL in releases:
        _configure_nerdctl(settings)
    if BUILDKIT in releases:
        _configure_buildkit(settings, binaries_change=BUILDKIT in outdated)


def _remove_files(release: Release, settings: Settings) -> None:
    remove_release_files(
        name=f"Remove {release.label} from {settings.bin_dir}",
        release=release,
        bin_dir=settings.bin_dir,
        installed_files=host.get_fact(
            ReleaseFiles, manifest=manifest_path(release), bin_dir=settings.bin_dir, fallback=release.version_binaries
        ),
    )


@deploy("Install nerdctl")
def install_nerdctl(**settings: Any) -> None:
    """The nerdctl release into ``bin_dir`` and ``/etc/nerdctl/nerdctl.toml``; no service is touched.

    Settings (keyword, else host data, else default) are listed in the README.

    .. code:: python

        install_nerdctl(nerdctl_version="2.3.5", containerd_namespace="k8s.io")
    """
    _install((NERDCTL,), settings)


@deploy("Install BuildKit")
def install_buildkit(**settings: Any) -> None:
    """BuildKit's binaries, its config, and its socket-activated units.

    .. code:: python

        install_buildkit(buildkit_version="0.12.5", buildkit_socket_group="buildkit")
    """
    _install((BUILDKIT,), settings)


@deploy("Install the nerdctl and BuildKit build host")
def install_build_host(**settings: Any) -> None:
    """nerdctl and BuildKit on one containerd and namespace; both archives verified before either lands.

    .. code:: python

        install_build_host(containerd_address="/run/k3s/containerd/containerd.sock",
                           containerd_namespace="k8s.io")
    """
    _install((NERDCTL, BUILDKIT), settings)


@deploy("Remove nerdctl")
def remove_nerdctl(**settings: Any) -> None:
    """nerdctl's binaries, ``/etc/nerdctl`` and the docker alias, gone.

    .. code:: python

        remove_nerdctl(bin_dir="/opt/bin")
    """
    resolved = host_settings(settings)
    _remove_files(NERDCTL, resolved)
    files.file(name=f"No {rendering.DOCKER_ALIAS}", path=rendering.DOCKER_ALIAS, present=False)
    files.directory(name="No /etc/nerdctl", path="/etc/nerdctl", present=False)


@deploy("Remove BuildKit")
def remove_buildkit(purge: bool = False, **settings: Any) -> None:
    """BuildKit stopped and disabled; its units, config and binaries gone; ``/var/lib/buildkit`` too with ``purge``.

    .. code:: python

        remove_buildkit(purge=True)
    """
    resolved = host_settings(settings)
    _require_systemd()
    systemd.service(name=f"Stop {rendering.SERVICE_UNIT}", service=rendering.SERVICE_UNIT, running=False)
    systemd.service(
        name=f"Stop and disable {rendering.SOCKET_UNIT}", service=rendering.SOCKET_UNIT, running=False, enabled=False
    )
    units = [
        files.file(name=f"No {rendering.UNIT_DIR}/{unit}", path=f"{rendering.UNIT_DIR}/{unit}", present=False)
        for unit in (rendering.SOCKET_UNIT, rendering.SERVICE_UNIT)
    ]
    if any(unit.will_change for unit in units):
        systemd.daemon_reload(name="Reload systemd units")
    _remove_files(BUILDKIT, resolved)
    files.directory(name="No /etc/buildkit", path="/etc/buildkit", present=False)
    if purge:
        files.directory(name=f"No {BUILDKIT_STATE}", path=BUILDKIT_STATE, present=False)


@deploy("Remove the nerdctl and BuildKit build host")
def remove_build_host(purge: bool = False, **settings: Any) -> None:
    """Everything ``install_build_host`` put on the host, removed (BuildKit's data kept unless ``purge``).

    .. code:: python

        remove_build_host(purge=True)
    """
    remove_buildkit(purge=purge, **settings)
    remove_nerdctl(**settings)
