"""What a build host needs, decided from one ``BuildHostState`` fact (pure: no host).

Deciding everything from one fact keeps a converged host at one remote command,
and makes every decision unit-testable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from .. import layout
from ..facts import UNITS
from ..facts.types import BuildHostStateDict, ManagedPathDict, StatDict
from . import rendering
from .k3s_registries import NO_K3S_REGISTRIES, K3sRegistries
from .releases import BUILDKIT, NERDCTL, NERDCTL_FULL, Release
from .settings import Settings

FILE_MODE = "644"
DIR_MODE = "755"
# The TLS folder is root's alone: an uploaded server key is never readable by anyone else, even before its chmod.
DIR_MODES = {layout.BUILDKIT_TLS_DIR: "700"}
OWNER = ("root", "root")
UNIT_FILES = frozenset({layout.SOCKET_PATH, layout.SERVICE_PATH, layout.CONTAINERD_UNIT_PATH})


@dataclass(frozen=True)
class ManagedFile:
    """A file the deploys own, with the content it must have (``root:root``, ``mode``)."""

    path: str
    content: str
    mode: str = FILE_MODE

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


def has_nerdctl(releases: tuple[Release, ...]) -> bool:
    return NERDCTL in releases or NERDCTL_FULL in releases


def has_buildkit(releases: tuple[Release, ...]) -> bool:
    return BUILDKIT in releases or NERDCTL_FULL in releases


def _containerd_config(settings: Settings, releases: tuple[Release, ...]) -> bool:
    return NERDCTL_FULL in releases and settings.containerd_config is not None


def dir_slots(possible: tuple[Release, ...]) -> tuple[str, ...]:
    """Every folder a deploy that may install ``possible`` manages, in a fixed order.

    A deploy runs one operation per slot on every host, a no-op where the slot has
    nothing to do, so that the plan lines up across a mixed fleet.
    """
    wanted = (
        (has_nerdctl(possible), layout.NERDCTL_CONFIG_DIR),
        (has_buildkit(possible), layout.BUILDKIT_CONFIG_DIR),
        (has_buildkit(possible), layout.BUILDKIT_TLS_DIR),
        (NERDCTL_FULL in possible, layout.CONTAINERD_CONFIG_DIR),
    )
    return tuple(directory for needed, directory in wanted if needed)


def file_slots(possible: tuple[Release, ...]) -> tuple[str, ...]:
    """Every file a deploy that may install ``possible`` manages, in a fixed order (see ``dir_slots``)."""
    wanted = (
        (has_nerdctl(possible), (layout.NERDCTL_CONFIG, layout.DOCKER_ALIAS)),
        (NERDCTL_FULL in possible, (layout.CONTAINERD_UNIT_PATH, layout.CONTAINERD_CONFIG)),
        (has_buildkit(possible), (layout.BUILDKIT_CONFIG, layout.SOCKET_PATH, layout.SERVICE_PATH)),
        (has_buildkit(possible), layout.TLS_FILES),
    )
    return tuple(path for needed, paths in wanted if needed for path in paths)


def dir_mode(directory: str) -> str:
    return DIR_MODES.get(directory, DIR_MODE)


def managed_dirs(settings: Settings, releases: tuple[Release, ...]) -> tuple[str, ...]:
    """The folders ``releases`` need: their slots, ``/etc/containerd`` only for a ``containerd_config``,
    the TLS folder only for a remote builder."""
    unless = {
        layout.CONTAINERD_CONFIG_DIR: _containerd_config(settings, releases),
        layout.BUILDKIT_TLS_DIR: settings.buildkit_remote_address is not None,
    }
    return tuple(directory for directory in dir_slots(releases) if unless.get(directory, True))


def managed_files(
    settings: Settings,
    releases: tuple[Release, ...],
    k3s: K3sRegistries = NO_K3S_REGISTRIES,
    tls: tuple[ManagedFile, ...] = (),
) -> tuple[ManagedFile, ...]:
    """Every file ``releases`` need, rendered from ``settings`` and the host's ``k3s`` registry configuration;
    ``tls``: a remote builder's (``remote.tls_files``)."""
    files = []
    if has_nerdctl(releases):
        files.append(ManagedFile(layout.NERDCTL_CONFIG, rendering.nerdctl_toml(settings, k3s)))
        if settings.nerdctl_docker_alias:
            files.append(ManagedFile(layout.DOCKER_ALIAS, rendering.docker_alias(settings)))
    if NERDCTL_FULL in releases:
        files.append(ManagedFile(layout.CONTAINERD_UNIT_PATH, rendering.containerd_unit(settings)))
    if _containerd_config(settings, releases):
        files.append(ManagedFile(layout.CONTAINERD_CONFIG, rendering.containerd_toml(settings)))
    if has_buildkit(releases):
        files += [
            ManagedFile(layout.BUILDKIT_CONFIG, rendering.buildkitd_toml(settings, k3s)),
            ManagedFile(layout.SOCKET_PATH, rendering.buildkit_socket_unit(settings)),
            ManagedFile(layout.SERVICE_PATH, rendering.buildkit_service_unit(settings)),
            *tls,
        ]
    return tuple(files)


def watched_paths(possible: tuple[Release, ...]) -> tuple[str, ...]:
    """The paths whose state ``BuildHostState`` must report for ``plan_changes`` and ``plan_removal``.

    The containerd unit is watched even by the minimal flavor, to take ours away, and
    BuildKit's data folder for a removal with ``purge``.
    """
    extra = (layout.CONTAINERD_UNIT_PATH, layout.BUILDKIT_STATE) if BUILDKIT in possible else ()
    return tuple(dict.fromkeys(dir_slots(possible) + file_slots(possible) + extra))


@dataclass(frozen=True)
class Changes:
    """What one host needs; empty on a converged host."""

    outdated: tuple[Release, ...] = ()
    remember_versions: tuple[str, ...] = ()
    create_group: bool = False
    dirs: tuple[str, ...] = ()
    created_dirs_to_fix: tuple[str, ...] = ()
    files: tuple[ManagedFile, ...] = ()
    remove_alias: bool = False
    retire_containerd: bool = False
    daemon_reload: bool = False
    enable_containerd: bool = False
    start_containerd: bool = False
    restart_containerd: bool = False
    enable_socket: bool = False
    start_socket: bool = False
    restart_socket: bool = False
    restart_service: bool = False
    # A remote builder's service runs all the time (enabled, started); back to on-demand, it is disabled.
    enable_service: bool = False
    start_service: bool = False
    disable_service: bool = False
    # Our TLS files (and their folder) go once the host is no remote builder: they run after the check.
    remove_tls: tuple[str, ...] = ()
    # A step stops or restarts a running buildkit.service, or the containerd its builds run on.
    wait_for_builds: bool = False


def installed_version(release: Release, state: BuildHostStateDict) -> str | None:
    """What the host runs; for BuildKit, None unless buildkitd and buildctl agree.

    A minimal release counts as absent while a full archive installed by these deploys
    is there, so that switching flavor reinstalls it and takes the full archive's files away.
    """
    if release is NERDCTL_FULL:
        return state["full"]["version"]
    if state["full"]["managed"]:
        return None
    if release is NERDCTL:
        return state["nerdctl"]
    versions = state["buildkit"]
    return versions["buildkitd"] if versions["buildkitd"] == versions["buildctl"] else None


def wanted_version(release: Release, settings: Settings) -> str:
    return settings.buildkit_version if release is BUILDKIT else settings.nerdctl_version


def _ours(paths: dict[str, ManagedPathDict], path: str) -> bool:
    """Whether ``path`` exists and carries this package's marker: the only proof that it is ours."""
    return bool(path in paths and paths[path].get("ours"))


def _wrong(found: StatDict | None, kind: str, mode: str, owner: tuple[str, str | None] = OWNER) -> bool:
    """Whether ``found`` is missing or not a ``kind`` of ``mode`` and ``owner`` (user, group; a None group: any)."""
    user, group = owner
    return (
        found is None
        or found["kind"] != kind
        or found["mode"] != mode
        or found["user"] != user
        or group not in (None, found["group"])
    )


def file_outdated(found: ManagedPathDict | None, file: ManagedFile, owner: tuple[str, str | None] = OWNER) -> bool:
    """Whether the managed ``file`` must be written: ``found`` (its stat and SHA-256) is missing or differs."""
    return found is None or _wrong(found, "file", file.mode, owner) or found["sha256"] != file.sha256


def created_dirs_to_fix(state: BuildHostStateDict) -> tuple[str, ...]:
    """Folders the install made whose mode or owner is no longer ``root:root 0755``.

    The install sets them whatever the umask; this repairs folders made by a run before
    it did, or changed since.
    """
    return tuple(
        d for d, found in state["created_dirs"].items() if found["kind"] == "dir" and _wrong(found, "dir", DIR_MODE)
    )


def versions_to_remember(executed: tuple[str, ...], outdated: tuple[Release, ...]) -> tuple[str, ...]:
    """The binaries the version facts had to execute that this run's install does not replace.

    An install records what it installs; a binary it leaves in place (set there by hand, or by
    a run before the record existed) is recorded beside it, else the next run would do it.
    The full archive brings every binary.
    """
    if NERDCTL_FULL in outdated:
        return ()
    installed = {name.rsplit("/", 1)[-1] for release in outdated for name in release.version_binaries}
    return tuple(path for path in executed if path.rsplit("/", 1)[-1] not in installed)


def plan_changes(
    settings: Settings,
    state: BuildHostStateDict,
    releases: tuple[Release, ...],
    k3s: K3sRegistries = NO_K3S_REGISTRIES,
    tls: tuple[ManagedFile, ...] = (),
) -> Changes:
    """The changes ``releases`` need on a host whose ``BuildHostState`` is ``state`` (``k3s``: what its
    k3s registry configuration adds to the configs, ``k3s_registries``; ``tls``: see ``managed_files``).

    A unit file change means one daemon-reload (the one ``systemctl enable`` makes, where a
    unit is being enabled). A socket that changed, or that runs a unit older than its file,
    is restarted, which restarts a running service with it. Otherwise a running service is
    restarted when its binary, config or unit changed, or when it has run since before they
    did (an interrupted earlier run). containerd from the full archive follows the same rules.
    """
    paths = state["paths"]
    wanted = managed_files(settings, releases, k3s, tls)
    files = tuple(file for file in wanted if file_outdated(paths.get(file.path), file))
    outdated = tuple(r for r in releases if installed_version(r, state) != wanted_version(r, settings))
    changes = Changes(
        outdated=outdated,
        remember_versions=versions_to_remember(state.get("versions_executed", ()), outdated),
        dirs=tuple(d for d in managed_dirs(settings, releases) if _wrong(paths.get(d), "dir", dir_mode(d))),
        created_dirs_to_fix=created_dirs_to_fix(state),
        files=files,
        remove_alias=has_nerdctl(releases) and not settings.nerdctl_docker_alias and _ours(paths, layout.DOCKER_ALIAS),
        # Leaving the full flavor: our containerd unit (known by its marker) goes with its binaries.
        retire_containerd=BUILDKIT in releases and _ours(paths, layout.CONTAINERD_UNIT_PATH),
    )
    return _plan_units(changes, settings, state, releases) if has_buildkit(releases) else changes


def _plan_units(
    changes: Changes, settings: Settings, state: BuildHostStateDict, releases: tuple[Release, ...]
) -> Changes:
    changed = {file.path for file in changes.files}
    units = state["units"]
    socket, service, containerd = units["socket"], units["service"], units["containerd"]
    full = NERDCTL_FULL in releases
    new_binaries = bool(set(changes.outdated) & {BUILDKIT, NERDCTL_FULL})
    restart_socket = socket["active"] and (layout.SOCKET_PATH in changed or socket["stale"])
    service_inputs_changed = new_binaries or bool(changed & {layout.BUILDKIT_CONFIG, layout.SERVICE_PATH, *layout.TLS_FILES})
    containerd_inputs_changed = new_binaries or bool(changed & {layout.CONTAINERD_CONFIG, layout.CONTAINERD_UNIT_PATH})
    enable_containerd = full and not containerd["enabled"]
    restart_containerd = full and containerd["active"] and (containerd_inputs_changed or containerd["stale"])
    restart_service = service["active"] and not restart_socket and (service_inputs_changed or service["stale"])
    reload_needed = (
        bool(changed & UNIT_FILES)
        or changes.retire_containerd
        or any(unit["needs_daemon_reload"] for unit in units.values())
    )
    changes = _remote_service(changes, settings, state)
    return replace(
        changes,
        create_group=bool(settings.buildkit_socket_group) and not state["group_exists"],
        # `systemctl enable` reloads systemd itself: a second reload would cost every new host twice.
        daemon_reload=reload_needed and socket["enabled"],
        enable_containerd=enable_containerd,
        start_containerd=full and not containerd["active"],
        restart_containerd=restart_containerd,
        enable_socket=not socket["enabled"],
        start_socket=not (socket["enabled"] and socket["active"]),
        restart_socket=restart_socket,
        restart_service=restart_service,
        wait_for_builds=service["active"]
        and (restart_socket or restart_service or restart_containerd or changes.retire_containerd),
    )


def _remote_service(changes: Changes, settings: Settings, state: BuildHostStateDict) -> Changes:
    """A remote builder's service enabled and running (a TCP client cannot start it); else on demand, TLS files gone."""
    service = state["units"]["service"]
    if settings.buildkit_remote_address is not None:
        return replace(changes, enable_service=not service["enabled"], start_service=not service["active"])
    paths = state["paths"]
    ours = tuple(path for path in layout.TLS_FILES if _ours(paths, path))
    folder = (layout.BUILDKIT_TLS_DIR,) if layout.BUILDKIT_TLS_DIR in paths else ()
    return replace(changes, disable_service=service["enabled"], remove_tls=ours + folder)


@dataclass(frozen=True)
class Removal:
    """What a removal takes away on one host: only what carries this package's marker."""

    stop_service: bool = False
    disable_service: bool = False  # a remote builder's
    stop_units: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    dirs: tuple[str, ...] = ()
    daemon_reload: bool = False


def plan_removal(state: BuildHostStateDict, possible: tuple[Release, ...]) -> Removal:
    """What removing ``possible`` takes away on a host whose ``BuildHostState`` is ``state``.

    A unit is stopped and disabled only when its file is ours; a folder goes only when
    a file of ours in it goes, and only if nothing else is left in it.
    """
    paths, units = state["paths"], state["units"]
    files = tuple(path for path in file_slots(possible) if _ours(paths, path))
    unit_files = {layout.SOCKET_PATH: "socket", layout.CONTAINERD_UNIT_PATH: "containerd"}
    stop_units = tuple(
        UNITS[unit]
        for path, unit in unit_files.items()
        if path in files and (units[unit]["enabled"] or units[unit]["active"])
    )
    return Removal(
        stop_service=layout.SERVICE_PATH in files and units["service"]["active"],
        disable_service=layout.SERVICE_PATH in files and units["service"]["enabled"],
        stop_units=stop_units,
        files=files,
        dirs=tuple(d for d in dir_slots(possible) if any(path.startswith(f"{d}/") for path in files)),
        daemon_reload=bool(UNIT_FILES & set(files)),
    )
