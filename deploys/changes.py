"""What a build host needs, decided from one ``BuildHostState`` fact (pure: no host).

Deciding everything from one fact keeps a converged host at one remote command,
and makes every decision unit-testable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from . import rendering
from .releases import BUILDKIT, NERDCTL, Release
from .settings import Settings

FILE_MODE = "644"
DIR_MODE = "755"
OWNER = ("root", "root")


@dataclass(frozen=True)
class ManagedFile:
    """A file the deploys own, with the content it must have (``root:root 0644``)."""

    path: str
    content: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()


def managed_dirs(releases: tuple[Release, ...]) -> tuple[str, ...]:
    return tuple(
        directory
        for release, directory in ((NERDCTL, "/etc/nerdctl"), (BUILDKIT, "/etc/buildkit"))
        if release in releases
    )


def managed_files(settings: Settings, releases: tuple[Release, ...]) -> tuple[ManagedFile, ...]:
    """Every file ``releases`` need, rendered from ``settings``."""
    files = []
    if NERDCTL in releases:
        files.append(ManagedFile(rendering.NERDCTL_CONFIG, rendering.nerdctl_toml(settings)))
        if settings.nerdctl_docker_alias:
            files.append(ManagedFile(rendering.DOCKER_ALIAS, rendering.docker_alias(settings)))
    if BUILDKIT in releases:
        files += [
            ManagedFile(rendering.BUILDKIT_CONFIG, rendering.buildkitd_toml(settings)),
            ManagedFile(rendering.SOCKET_PATH, rendering.buildkit_socket_unit(settings)),
            ManagedFile(rendering.SERVICE_PATH, rendering.buildkit_service_unit(settings)),
        ]
    return tuple(files)


def watched_paths(settings: Settings, releases: tuple[Release, ...]) -> tuple[str, ...]:
    """The paths whose state ``BuildHostState`` must report for ``plan_changes``."""
    alias = (rendering.DOCKER_ALIAS,) if NERDCTL in releases else ()
    paths = managed_dirs(releases) + tuple(file.path for file in managed_files(settings, releases)) + alias
    return tuple(dict.fromkeys(paths))


@dataclass(frozen=True)
class Changes:
    """What one host needs; empty on a converged host."""

    outdated: tuple[Release, ...] = ()
    create_group: bool = False
    dirs: tuple[str, ...] = ()
    files: tuple[ManagedFile, ...] = ()
    remove_alias: bool = False
    daemon_reload: bool = False
    enable_socket: bool = False
    start_socket: bool = False
    restart_socket: bool = False
    restart_service: bool = False


def installed_version(release: Release, state: dict) -> str | None:
    """What the host runs; for BuildKit, None unless buildkitd and buildctl agree."""
    if release is NERDCTL:
        return state["nerdctl"]
    versions = state["buildkit"]
    return versions["buildkitd"] if versions["buildkitd"] == versions["buildctl"] else None


def wanted_version(release: Release, settings: Settings) -> str:
    return getattr(settings, f"{release.name}_version")


def _wrong(found: dict | None, kind: str, mode: str) -> bool:
    return found is None or found["kind"] != kind or found["mode"] != mode or (found["user"], found["group"]) != OWNER


def plan_changes(settings: Settings, state: dict, releases: tuple[Release, ...]) -> Changes:
    """The changes ``releases`` need on a host whose ``BuildHostState`` is ``state``.

    A unit file change means one daemon-reload (the one ``systemctl enable`` makes, where the
    socket is being enabled). A socket that changed, or that runs
    a unit older than its file, is restarted, which restarts a running service with
    it. Otherwise a running service is restarted when its binary, config or unit
    changed, or when it has run since before they did (an interrupted earlier run).
    """
    paths = state["paths"]
    files = tuple(
        file
        for file in managed_files(settings, releases)
        if _wrong(paths.get(file.path), "file", FILE_MODE) or paths[file.path]["sha256"] != file.sha256
    )
    changes = Changes(
        outdated=tuple(r for r in releases if installed_version(r, state) != wanted_version(r, settings)),
        dirs=tuple(d for d in managed_dirs(releases) if _wrong(paths.get(d), "dir", DIR_MODE)),
        files=files,
        remove_alias=NERDCTL in releases and not settings.nerdctl_docker_alias and rendering.DOCKER_ALIAS in paths,
    )
    return _plan_units(changes, settings, state) if BUILDKIT in releases else changes


def _plan_units(changes: Changes, settings: Settings, state: dict) -> Changes:
    changed = {file.path for file in changes.files}
    socket, service = state["units"]["socket"], state["units"]["service"]
    restart_socket = socket["active"] and (rendering.SOCKET_PATH in changed or socket["stale"])
    service_inputs_changed = BUILDKIT in changes.outdated or bool(
        changed & {rendering.BUILDKIT_CONFIG, rendering.SERVICE_PATH}
    )
    reload_needed = (
        bool(changed & {rendering.SOCKET_PATH, rendering.SERVICE_PATH})
        or socket["needs_daemon_reload"]
        or service["needs_daemon_reload"]
    )
    return replace(
        changes,
        create_group=bool(settings.buildkit_socket_group) and not state["group_exists"],
        # `systemctl enable` reloads systemd itself: a second reload would cost every new host twice.
        daemon_reload=reload_needed and socket["enabled"],
        enable_socket=not socket["enabled"],
        start_socket=not (socket["enabled"] and socket["active"]),
        restart_socket=restart_socket,
        restart_service=service["active"] and not restart_socket and (service_inputs_changed or service["stale"]),
    )
