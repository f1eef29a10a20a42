"""The shapes the facts return, as ``TypedDict`` (as pyinfra types its own, e.g. ``FileDict``).

The planners take these types, so a key read that no fact writes is a type error, and
``tests/test_fact_types.py`` holds every fact's ``process()`` output to them.
Every key is always present (no ``NotRequired``: Python 3.10 has it only from typing_extensions).
"""

from __future__ import annotations

from typing import TypedDict


class PlatformDict(TypedDict):
    """``BuildHostPlatform``, and the first keys of ``BuildHostState`` and ``RootlessState``."""

    machine: str
    systemd: bool


class SocketFileDict(TypedDict):
    """What ``stat`` says of a socket path (``parse_stat``); mode, user and group None when absent."""

    exists: bool
    is_socket: bool
    mode: str | None
    user: str | None
    group: str | None


class BuildkitSocketDict(SocketFileDict):
    """``BuildkitSocket``: the socket unit's state and the file it listens on."""

    enabled: bool
    active: bool
    path: str | None


class ContainerdSocketDict(TypedDict):
    """``ContainerdSocket``."""

    path: str | None
    exists: bool
    is_socket: bool


class UnitStateDict(TypedDict):
    """One unit's state; ``stale``: active since before its inputs last changed."""

    enabled: bool
    active: bool
    needs_daemon_reload: bool
    stale: bool


# ``BuildkitUnitFreshness`` and ``BuildHostState["units"]``: by ``UNITS`` key ("socket", "service",
# "containerd"); ``RootlessState["units"]``: by the user's unit names ("containerd.service", ...).
UnitsDict = dict[str, UnitStateDict]


class WorkerDict(TypedDict):
    """One of ``BuildkitWorkers``."""

    id: str
    executor: str | None
    namespace: str | None
    platforms: list[str]


class BuildDict(TypedDict):
    """One of ``BuildkitBuilds``: a build in flight, its ref and when it started (RFC 3339; None: not said)."""

    ref: str
    started: str | None


class BuildkitVersionsDict(TypedDict):
    """``BuildkitVersion``: each None when absent."""

    buildkitd: str | None
    buildctl: str | None


class FullReadmeDict(TypedDict):
    """The full archive's README.md: its nerdctl version (None when absent) and its components."""

    version: str | None
    components: dict[str, str]


class NerdctlFullDict(FullReadmeDict):
    """``NerdctlFull``."""

    containerd_active: bool


class FullStateDict(FullReadmeDict):
    """``BuildHostState["full"]``; ``managed``: installed by these deploys (a manifest of ours is there)."""

    managed: bool


class StatDict(TypedDict):
    """A path's kind (``file_kind``), mode and owner."""

    kind: str
    mode: str
    user: str
    group: str


class ManagedPathDict(StatDict):
    """A watched path: ``sha256`` of a file (else None), ``ours``: it carries this package's marker."""

    sha256: str | None
    ours: bool


class ForeignUnitDict(TypedDict):
    """A unit file without our marker that runs buildkitd or listens on a BuildKit path."""

    unit: str
    path: str
    socket: str
    enabled: bool
    active: bool


class ForeignProcessDict(TypedDict):
    """A buildkitd process of root; ``main``: its unit's MainPID (never without a unit)."""

    pid: int
    unit: str | None
    socket: str
    main: bool
    socket_activated: bool
    enabled: bool


class ForeignBuildkitDict(TypedDict):
    """``BuildHostState["foreign_buildkit"]``: what else runs BuildKit (``parse_foreign_buildkit``)."""

    units: list[ForeignUnitDict]
    processes: list[ForeignProcessDict]


class BuildHostStateDict(PlatformDict):
    """``BuildHostState``: everything the build-host deploys decide from."""

    nerdctl: str | None
    buildkit: BuildkitVersionsDict
    # The binaries whose version record no longer held, so the fact executed them (``parse_executed``).
    versions_executed: tuple[str, ...]
    paths: dict[str, ManagedPathDict]
    created_dirs: dict[str, StatDict]
    group_exists: bool
    units: UnitsDict
    full: FullStateDict
    foreign_buildkit: ForeignBuildkitDict
    # What killed runs left (``leftovers_command``).
    leftovers: list[str]
    # A remote builder's server certificate as the file holds it (``tls_cert_command``); None: no such file.
    tls_cert: str | None
    # k3s's registries.yaml (None: no such file), and whether k3s's hosts.toml folder (certs.d) exists.
    k3s_registries: str | None
    k3s_certs_d: bool
    # The hosts.toml files in k3s's certs.d that k3s did not write, by folder name (``k3s_registries_command``).
    k3s_hosts_toml: dict[str, str]


class AccountDict(TypedDict):
    """A ``getent passwd`` entry's IDs and home folder (``parse_passwd``)."""

    uid: int
    gid: int
    home: str


class RootlessSocketDict(TypedDict):
    """``RootlessState["socket"]``: where the user's BuildKit listens for its namespace (``path``, None for
    a user that does not exist), and where its running socket unit listens now (``listening``, None: not).
    """

    path: str | None
    exists: bool
    listening: str | None


class RootlessStateDict(PlatformDict):
    """``RootlessState``: everything the rootless deploys decide from.

    ``uid``, ``gid`` and ``home`` are None when the user does not exist; ``subuid`` and ``subgid``
    the user's ranges as ``[start, count]``, ``all_subuid`` and ``all_subgid`` every
    ``(name, start, count)``; ``files`` relative to the home folder; ``good_copies``: the check's
    copies of the user's good files are there.
    """

    user: str
    exists: bool
    uid: int | None
    gid: int | None
    home: str | None
    home_exists: bool
    lingering: bool
    lingering_ours: bool
    subids_ours: list[int] | None
    subuid: list[list[int]]
    subgid: list[list[int]]
    all_subuid: list[tuple[str, int, int]]
    all_subgid: list[tuple[str, int, int]]
    userns_refused: str | None
    programs: dict[str, str]
    installed: list[str]
    user_dbus: bool
    files: dict[str, ManagedPathDict]
    data: list[str]
    good_copies: bool
    manager: bool
    units: UnitsDict
    socket: RootlessSocketDict


class FileSystemDict(TypedDict):
    """``BuildkitDiskUsage["filesystem"]``: the file system under BuildKit's root, in bytes (``statfs``).

    ``path``: the folder measured (the root, else its nearest existing parent); ``free``: what
    BuildKit's ``minFreeSpace`` compares with (root's free blocks); ``available``: ``df``'s Available.
    """

    path: str
    size: int
    free: int
    available: int


class BuildkitCacheDict(TypedDict):
    """``BuildkitDiskUsage["cache"]``: BuildKit's cache in bytes, summed as ``buildctl du`` sums it.

    ``shared``: the part containerd's images also hold (pruning it frees no disk while they stay);
    ``by_type``: bytes by record type (``regular``, ``source.local``, ``exec.cachemount``, ...).
    """

    total: int
    reclaimable: int
    shared: int
    records: int
    by_type: dict[str, int]


class BuildkitDiskUsageDict(TypedDict):
    """``BuildkitDiskUsage``: the file system's figures, and the cache's (None, with the ``reason``, when not asked)."""

    filesystem: FileSystemDict | None
    cache: BuildkitCacheDict | None
    reason: str | None
