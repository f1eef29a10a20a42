"""The build-host deploys: nerdctl, BuildKit socket-activated on containerd, or both."""

from __future__ import annotations

from io import StringIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd

from ..facts import BuildHostPlatform, BuildkitVersion, NerdctlVersion
from . import rendering
from .operations import release_files
from .releases import BUILDKIT, NERDCTL, Download, Release, ReleaseError, resolve_download, upstream_arch
from .settings import Settings, SettingError, resolve_settings, unknown_key_warnings


def _fail(message: str) -> DeployError:
    return DeployError(f"{host.name}: {message}")


def host_settings(overrides: dict[str, Any]) -> Settings:
    """This host's settings: keyword arguments, else host data, else defaults; checked."""
    for warning in unknown_key_warnings(host.data.dict()):
        logger.warning(f"{host.name}: {warning}")
    try:
        return resolve_settings(host.data.get, {key: value for key, value in overrides.items() if value is not None})
    except SettingError as error:
        raise _fail(str(error)) from error


def _require_systemd() -> dict:
    platform = host.get_fact(BuildHostPlatform)
    if not platform["systemd"]:
        raise _fail("systemd is not the running init system; pyinfra-nerdctl needs a systemd host")
    return platform


def _download(release: Release, settings: Settings, machine: str) -> Download:
    version = getattr(settings, f"{release.name}_version")
    try:
        arch = upstream_arch(machine, release, version)
        return resolve_download(release, version, arch, settings.github_url, getattr(settings, f"{release.name}_sha256"))
    except ReleaseError as error:
        raise _fail(str(error)) from error


def _config_file(path: str, content: str, mode: str = "644") -> Any:
    return files.put(
        name=f"Write {path}",
        src=StringIO(content),
        dest=path,
        user="root",
        group="root",
        mode=mode,
    )


def _config_dir(path: str) -> None:
    files.directory(name=f"Directory {path}", path=path, user="root", group="root", mode="755")


def _apply_nerdctl(settings: Settings, download: Download) -> None:
    release_files(
        name=f"Install nerdctl {download.version} into {settings.bin_dir}",
        download=download,
        bin_dir=settings.bin_dir,
        installed_version=host.get_fact(NerdctlVersion, bin_dir=settings.bin_dir),
    )
    _config_dir("/etc/nerdctl")
    _config_file(rendering.NERDCTL_CONFIG, rendering.nerdctl_toml(settings))
    if settings.nerdctl_docker_alias:
        _config_file(rendering.DOCKER_ALIAS, rendering.docker_alias(settings))
    else:
        files.file(name=f"No {rendering.DOCKER_ALIAS}", path=rendering.DOCKER_ALIAS, present=False)


def _installed_buildkit(settings: Settings) -> str | None:
    """The installed BuildKit version, or None unless buildkitd and buildctl agree."""
    versions = host.get_fact(BuildkitVersion, bin_dir=settings.bin_dir)
    return versions["buildkitd"] if versions["buildkitd"] == versions["buildctl"] else None


def _apply_buildkit(settings: Settings, download: Download) -> None:
    binaries = release_files(
        name=f"Install BuildKit {download.version} into {settings.bin_dir}",
        download=download,
        bin_dir=settings.bin_dir,
        installed_version=_installed_buildkit(settings),
    )
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
    socket_changed = socket_unit.will_change
    if socket_changed or service_unit.will_change:
        systemd.daemon_reload(name="Reload systemd units")
    # Restarting the socket restarts a running service too (Requires=), so restart one or the other.
    systemd.service(
        name=f"Enable and start {rendering.SOCKET_UNIT}",
        service=rendering.SOCKET_UNIT,
        running=True,
        enabled=True,
        restarted=socket_changed,
    )
    if not socket_changed and any(op.will_change for op in (binaries, config, service_unit)):
        systemd.service(
            name=f"Restart {rendering.SERVICE_UNIT} if it runs",
            service=rendering.SERVICE_UNIT,
            running=None,
            restarted=True,
        )


@deploy("Install nerdctl")
def install_nerdctl(**settings: Any) -> None:
    """The nerdctl release into ``bin_dir`` and ``/etc/nerdctl/nerdctl.toml``.

    Settings (keyword, else host data, else default) are listed in the README.

    .. code:: python

        install_nerdctl(nerdctl_version="2.3.5", containerd_namespace="k8s.io")
    """
    resolved = host_settings(settings)
    platform = _require_systemd()
    _apply_nerdctl(resolved, _download(NERDCTL, resolved, platform["machine"]))


@deploy("Install BuildKit")
def install_buildkit(**settings: Any) -> None:
    """BuildKit's binaries, its config, and its socket-activated units.

    .. code:: python

        install_buildkit(buildkit_version="0.12.5", buildkit_socket_group="buildkit")
    """
    resolved = host_settings(settings)
    platform = _require_systemd()
    _apply_buildkit(resolved, _download(BUILDKIT, resolved, platform["machine"]))


@deploy("Install the nerdctl and BuildKit build host")
def install_build_host(**settings: Any) -> None:
    """nerdctl, then BuildKit, on one containerd and namespace; every input checked first.

    .. code:: python

        install_build_host(containerd_address="/run/k3s/containerd/containerd.sock",
                           containerd_namespace="k8s.io")
    """
    resolved = host_settings(settings)
    platform = _require_systemd()
    downloads = [_download(release, resolved, platform["machine"]) for release in (NERDCTL, BUILDKIT)]
    _apply_nerdctl(resolved, downloads[0])
    _apply_buildkit(resolved, downloads[1])
