"""The build-host deploys: install or remove nerdctl, BuildKit socket-activated on containerd, or both."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, TypeVar

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import DeployError

from .. import layout
from ..certs import Authority, CertError, planned_ca
from ..facts import BuildHostState, ReleaseFiles, manifest_glob, manifest_path
from ..facts.types import BuildHostStateDict, PlatformDict
from .build_plan import dest_of, install_steps, removal_steps
from .changes import ManagedFile, has_buildkit, plan_changes, plan_removal, wanted_version, watched_paths
from .controller import remove_stale_partials
from .disk import disk_warnings, version_after_run
from .k3s_registries import NO_K3S_REGISTRIES, K3sRegistries, RegistriesError, k3s_registries
from .operations import fixed_steps
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
from .remote import server_names, tls_files
from .settings import SettingError, Settings, resolve_settings, settings_warnings, unknown_key_warnings
from .steps import carry_out
from .takeover import ForeignSetupError, Takeover, plan_takeover
from .verify import check_paths, containerd_missing_warning

T = TypeVar("T")


def fail(message: str) -> DeployError:
    """The error that fails this host, naming it."""
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
        raise fail(str(error)) from error
    for warning in settings_warnings(settings):
        logger.warning(f"{host.name}: {warning}")
    if settings.github_url.startswith("http://"):
        logger.warning(
            f"{host.name}: github_url={settings.github_url} is plain HTTP; "
            "archives are still checked against their SHA-256, but prefer HTTPS"
        )
    return settings


def log_warnings(warnings: list[str]) -> None:
    """Each of ``warnings``, naming this host."""
    for warning in warnings:
        logger.warning(f"{host.name}: {warning}")


def _require_systemd(platform: PlatformDict) -> str:
    """The host's ``uname -m``, once systemd is known to be its init system."""
    if not platform["systemd"]:
        raise fail("systemd is not the running init system; pyinfra-nerdctl needs a systemd host")
    return platform["machine"]


def _download(release: Release, settings: Settings, machine: str) -> Download:
    version = wanted_version(release, settings)
    try:
        arch = upstream_arch(machine, release, version)
        pin = settings.buildkit_sha256 if release is BUILDKIT else settings.nerdctl_sha256
        return resolve_download(release, version, arch, settings.github_url, pin, keyring=settings.nerdctl_gpg_keyring)
    except ReleaseError as error:
        raise fail(str(error)) from error


def _host_state(settings: Settings, possible: tuple[Release, ...]) -> BuildHostStateDict | None:
    """The one ``BuildHostState`` fact a deploy of ``possible`` reads (``read_state``)."""
    return read_state(
        BuildHostState,
        bin_dir=settings.bin_dir,
        paths=watched_paths(possible) + check_paths(settings, possible),
        group=settings.buildkit_socket_group,
        full_prefix=settings.full_prefix,
        full_manifests=manifest_glob(NERDCTL_FULL.name),
        k3s_registries=settings.k3s_registries,
    )


def _k3s_registries(settings: Settings, state: BuildHostStateDict) -> K3sRegistries:
    """What the host's k3s registry configuration adds to nerdctl's and BuildKit's configs; warned about
    where BuildKit cannot follow it, refused (nothing changed) where its file cannot be read."""
    if not settings.k3s_registries:
        return NO_K3S_REGISTRIES
    try:
        registries = k3s_registries(
            state.get("k3s_registries"), state.get("k3s_certs_d", False), state.get("k3s_hosts_toml", {})
        )
    except RegistriesError as error:
        raise fail(f"{layout.K3S_REGISTRIES}: {error} (k3s_registries=false leaves k3s's registries out)") from error
    for warning in registries.warnings:
        logger.warning(f"{host.name}: {warning}")
    return registries


def read_state(fact: type[FactBase[T]], **arguments: Any) -> T:
    """A deploy's one fact; None when it could not be read (pyinfra has then failed this host)."""
    state = host.get_fact(fact, **arguments)
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
    authority = _authority(settings) if has_buildkit(releases) else None
    state = _host_state(settings, possible)
    if state is None:
        return
    # nerdctl alone runs on any init; BuildKit's units need systemd.
    machine = _require_systemd(state) if releases != (NERDCTL,) else state["machine"]
    if not retired and state["full"]["managed"]:
        raise fail("this host runs the nerdctl-full flavor: change it with install_build_host, not piece by piece")
    takeover = _takeover(settings, state, releases)
    changes = plan_changes(
        settings, takeover.state, releases, _k3s_registries(settings, state), _server_tls(settings, state, authority)
    )
    downloads = [_download(release, settings, machine) for release in changes.outdated]
    warning = containerd_missing_warning(settings, takeover.state) if has_buildkit(releases) else None
    if warning:
        logger.warning(f"{host.name}: {warning}")
    if has_buildkit(releases):
        log_warnings(disk_warnings(settings, version_after_run(settings, state["buildkit"]["buildkitd"])))
    if settings.fetch_on_controller:
        remove_stale_partials(settings.release_cache_dir)
    steps = install_steps(settings, state, changes, takeover, releases, possible, retired, downloads, authority)
    with fixed_steps():
        carry_out(steps)


def _authority(settings: Settings) -> Authority | None:
    """The fleet's CA for a remote builder, before the host is read; None for none.

    A new one is made in memory, the same for every host of the run, and written by the deploy's
    first step (``build_plan.ca_step``), so that a ``--dry`` run writes nothing.
    """
    if settings.buildkit_remote_address is None:
        return None
    try:
        return planned_ca(settings.buildkit_ca_dir)
    except CertError as error:
        raise fail(str(error)) from error


def _server_tls(settings: Settings, state: BuildHostStateDict, authority: Authority | None) -> tuple[ManagedFile, ...]:
    """A remote builder's TLS files (``remote.tls_files``); a new server certificate is said, with why."""
    if authority is None:
        return ()
    names = server_names(settings, host.name, host.data.get("ssh_hostname"))
    if not names:
        logger.warning(f"{host.name}: its server certificate can name no address clients use: set buildkit_remote_names")
    files, reason = tls_files(settings, state, authority, names, datetime.now(timezone.utc))
    if reason:
        logger.info(f"{host.name}: new server certificate for {', '.join(names)}: {reason}")
    return files


def _takeover(settings: Settings, state: BuildHostStateDict, releases: tuple[Release, ...]) -> Takeover:
    """What takes over another BuildKit setup on this host; refused, with nothing changed, without buildkit_takeover."""
    if not has_buildkit(releases):
        return Takeover((), state)
    try:
        return plan_takeover(state, settings.buildkit_takeover)
    except ForeignSetupError as error:
        raise fail(str(error)) from error


def _refuse_full(settings: Settings, deploy_name: str) -> None:
    if settings.full:
        raise fail(
            f"nerdctl_flavor='full' installs nerdctl and BuildKit together: use install_build_host, not {deploy_name}"
        )


def _remove(settings: Settings, possible: tuple[Release, ...], purge: bool = False) -> None:
    """Take away what a deploy of ``possible`` put on the host, and only what carries our marker or file list.

    One step per possible item, in one order on every host, skipped where there is nothing of ours.
    """
    state = _host_state(settings, possible)
    if state is None:
        return
    if NERDCTL_FULL not in possible and state["full"]["managed"]:
        raise fail("this host runs the nerdctl-full flavor: remove it with remove_build_host, not piece by piece")
    if has_buildkit(possible):
        _require_systemd(state)
    # A file list is the proof that the files it names are ours.
    installed_files = {
        release: host.get_fact(ReleaseFiles, manifest=manifest_path(release.name, dest_of(release, settings)))
        for release in (BUILDKIT, NERDCTL, NERDCTL_FULL)
        if release in possible
    }
    steps = removal_steps(settings, state, plan_removal(state, possible), possible, purge, installed_files)
    with fixed_steps():
        carry_out(steps)


def _install_alone(release: Release, settings: dict[str, Any], deploy_name: str) -> None:
    """One minimal-flavor release by its own deploy (``install_nerdctl``, ``install_buildkit``)."""
    resolved = host_settings(settings)
    _refuse_full(resolved, deploy_name)
    _install(resolved, (release,), possible=(release,))


@deploy("Install nerdctl")
def install_nerdctl(**settings: Any) -> None:
    """The nerdctl release into ``bin_dir`` and ``/etc/nerdctl/nerdctl.toml``; no service is touched.

    Settings (keyword, else host data, else default) are listed in the README.

    .. code:: python

        install_nerdctl(nerdctl_version="2.3.5", containerd_namespace="k8s.io")
    """
    _install_alone(NERDCTL, settings, "install_nerdctl")


@deploy("Install BuildKit")
def install_buildkit(**settings: Any) -> None:
    """BuildKit's binaries, its config, and its socket-activated units.

    .. code:: python

        install_buildkit(buildkit_version="0.12.5", buildkit_socket_group="buildkit")
    """
    _install_alone(BUILDKIT, settings, "install_buildkit")


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


def _remove_alone(release: Release, settings: dict[str, Any], deploy_name: str, purge: bool = False) -> None:
    """One minimal-flavor release by its own deploy (``remove_nerdctl``, ``remove_buildkit``)."""
    resolved = host_settings(settings)
    _refuse_full(resolved, deploy_name)
    _remove(resolved, (release,), purge)


@deploy("Remove nerdctl")
def remove_nerdctl(**settings: Any) -> None:
    """nerdctl's binaries, ``/etc/nerdctl`` and the docker alias, gone.

    .. code:: python

        remove_nerdctl(bin_dir="/opt/bin")
    """
    _remove_alone(NERDCTL, settings, "remove_nerdctl")


@deploy("Remove BuildKit")
def remove_buildkit(purge: bool = False, **settings: Any) -> None:
    """BuildKit stopped and disabled; its units, config and binaries gone; ``/var/lib/buildkit`` too with ``purge``.

    .. code:: python

        remove_buildkit(purge=True)
    """
    _remove_alone(BUILDKIT, settings, "remove_buildkit", purge)


@deploy("Remove the nerdctl and BuildKit build host")
def remove_build_host(purge: bool = False, **settings: Any) -> None:
    """Everything ``install_build_host`` put on the host, removed (BuildKit's data kept unless ``purge``).

    Whatever the flavor: with a full archive, containerd is stopped and disabled too, and
    every file of the archive goes.

    .. code:: python

        remove_build_host(purge=True)
    """
    _remove(host_settings(settings), (NERDCTL, BUILDKIT, NERDCTL_FULL), purge)
