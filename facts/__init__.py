"""Facts about a build host: installed versions, and socket and unit state.

Each fact returns a documented shape and a clear empty value when nothing is
installed, never an error. Usable from the CLI, e.g.
``pyinfra INVENTORY fact pyinfra_nerdctl.facts.NerdctlVersion bin_dir=/opt/bin``.
"""

from __future__ import annotations

import re
import shlex
import stat
from datetime import datetime, timezone

from pyinfra.api import FactBase, FactProcessError

from ..layout import (
    BUILDKIT_ADDRESS,
    BUILDKIT_CONFIG,
    CONTAINERD_CONFIG,
    CONTAINERD_UNIT,
    CREATED_FOLDERS,
    DEFAULT_BIN_DIR,
    DEFAULT_FULL_PREFIX,
    FULL_README,
    MARKER,
    SERVICE_UNIT,
    SOCKET_UNIT,
    STATE_DIR,
    UNIT_DIR,
)
from .foreign import foreign_buildkit_command, parse_foreign_buildkit

NERDCTL_VERSION = re.compile(r"^nerdctl version v?(\S+)$")
SHA256_LINE = re.compile(r"^[0-9a-f]{64}$")
BUILDKIT_VERSION = re.compile(r"^(buildkitd|buildctl) github\.com/moby/buildkit v?(\S+)(?: \S+)?$")


def manifest_path(release_name: str, dest: str) -> str:
    """Where the absolute paths of the files a release installed under ``dest`` are kept.

    One manifest per release and destination: the same release installed in two
    places is two installs, each converging on its own.
    """
    return f"{STATE_DIR}/{release_name}@{dest.replace('/', '_')}.files"


def manifest_glob(release_name: str) -> str:
    """Every manifest of a release, wherever it was installed (a pattern whose only wildcard is ``*``)."""
    return f"{STATE_DIR}/{release_name}@*.files"


def shell_glob(pattern: str) -> str:
    """``pattern`` for the shell: every character quoted but ``*``, which still expands.

    >>> shell_glob("/var/lib/my tools/nerdctl-full@*.files")
    "'/var/lib/my tools/nerdctl-full@'*.files"
    """
    return "*".join(shlex.quote(part) if part else "" for part in pattern.split("*"))


def in_c_locale(command: str) -> str:
    """``command`` with every program in it speaking the C locale, whatever the host's ``LANG``.

    Facts parse what programs print: ``stat``, ``systemctl`` and others translate words
    and day names (``reguläre Datei``, ``So``) on a German host. ``LC_ALL`` wins over
    ``LANG`` and every ``LC_*``, and gettext ignores ``LANGUAGE`` in the C locale.
    """
    return f"export LC_ALL=C; {command}"


def parse_nerdctl_version(lines: list[str]) -> str | None:
    """``nerdctl version 2.3.5`` to ``"2.3.5"``; None for anything else."""
    for line in lines:
        match = NERDCTL_VERSION.match(line.strip())
        if match:
            return match.group(1)
    return None


def parse_buildkit_versions(lines: list[str]) -> dict[str, str | None]:
    """``buildkitd github.com/moby/buildkit v0.12.5 <rev>`` lines to ``{"buildkitd": "0.12.5", "buildctl": ...}``."""
    versions: dict[str, str | None] = {"buildkitd": None, "buildctl": None}
    for line in lines:
        match = BUILDKIT_VERSION.match(line.strip())
        if match:
            versions[match.group(1)] = match.group(2)
    return versions


def parse_key_values(lines: list[str]) -> dict[str, str]:
    """``Key=value`` lines (``systemctl show`` style) to a dict."""
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _version_command(binary: str) -> str:
    path = shlex.quote(binary)
    return f"if [ -x {path} ]; then {path} --version 2>/dev/null || true; fi"


def _buildkit_version_command(bin_dir: str) -> str:
    return "; ".join(_version_command(f"{bin_dir}/{name}") for name in ("buildkitd", "buildctl"))


class NerdctlVersion(FactBase[str | None]):
    """The installed nerdctl version, from ``nerdctl --version`` (needs no daemon).

    .. code:: python

        "2.3.5"  # or None when nerdctl is not installed
    """

    def command(self, bin_dir: str = DEFAULT_BIN_DIR) -> str:
        return in_c_locale(_version_command(f"{bin_dir}/nerdctl"))

    def process(self, output: list[str]) -> str | None:
        return parse_nerdctl_version(output)

    @staticmethod
    def default() -> None:
        return None


class BuildkitVersion(FactBase[dict]):
    """Versions of ``buildkitd`` and ``buildctl``, each None when absent.

    .. code:: python

        {"buildkitd": "0.12.5", "buildctl": "0.12.5"}
    """

    def command(self, bin_dir: str = DEFAULT_BIN_DIR) -> str:
        return in_c_locale(_buildkit_version_command(bin_dir))

    def process(self, output: list[str]) -> dict:
        return parse_buildkit_versions(output)

    @staticmethod
    def default() -> dict:
        return {"buildkitd": None, "buildctl": None}


# stat's %F names the file type in the host's language; %f, the raw mode in hex, is the same everywhere.
STAT_FIELDS = "%f|%a|%U|%G"
FILE_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFSOCK: "socket", stat.S_IFLNK: "symlink"}


def file_kind(raw_mode: str) -> str:
    """stat's ``%f`` (the raw mode in hex) to ``"file"``, ``"dir"``, ``"socket"``, ``"symlink"`` or ``"other"``.

    >>> file_kind("81a4")
    'file'
    """
    return FILE_KINDS.get(stat.S_IFMT(int(raw_mode, 16)), "other")


def _stat_command(path: str) -> str:
    """Print ``stat=<raw mode>|<mode>|<user>|<group>`` for ``path``, nothing when it is absent."""
    return f"stat -c 'stat={STAT_FIELDS}' {path} 2>/dev/null || true"


def parse_stat(value: str | None) -> dict:
    if not value:
        return {"exists": False, "is_socket": False, "mode": None, "user": None, "group": None}
    raw_mode, mode, user, group = value.split("|")
    return {"exists": True, "is_socket": file_kind(raw_mode) == "socket", "mode": mode, "user": user, "group": group}


def parse_socket_unit(lines: list[str]) -> dict:
    values = parse_key_values(lines)
    listen = values.get("Listen", "").split(" (")[0] or None
    return {
        "enabled": values.get("UnitFileState") == "enabled",
        "active": values.get("ActiveState") == "active",
        "path": listen,
        **parse_stat(values.get("stat")),
    }


class BuildkitSocket(FactBase[dict]):
    """The BuildKit socket unit's state and the file it listens on.

    .. code:: python

        {"enabled": True, "active": True, "path": "/run/buildkit/buildkitd.sock",
         "exists": True, "is_socket": True, "mode": "660", "user": "root", "group": "buildkit"}
    """

    def command(self, unit: str = SOCKET_UNIT) -> str:
        unit = shlex.quote(unit)
        return in_c_locale(
            f"systemctl show --property=UnitFileState,ActiveState,Listen {unit} 2>/dev/null || true; "
            f"listen=$(systemctl show --property=Listen --value {unit} 2>/dev/null | sed 's/ (.*//' | head -n1); "
            f'if [ -n "$listen" ]; then {_stat_command(chr(34) + "$listen" + chr(34))}; fi'
        )

    def process(self, output: list[str]) -> dict:
        return parse_socket_unit(output)

    @staticmethod
    def default() -> dict:
        return parse_socket_unit([])


class ContainerdSocket(FactBase[dict]):
    """Whether the containerd socket exists and is a socket (``unix://`` prefix accepted).

    .. code:: python

        {"path": "/run/containerd/containerd.sock", "exists": True, "is_socket": True}
    """

    def command(self, address: str = "/run/containerd/containerd.sock") -> str:
        path = shlex.quote(address.removeprefix("unix://"))
        return in_c_locale(f"echo path={path}; {_stat_command(path)}")

    def process(self, output: list[str]) -> dict:
        values = parse_key_values(output)
        found = parse_stat(values.get("stat"))
        return {"path": values.get("path"), "exists": found["exists"], "is_socket": found["is_socket"]}

    @staticmethod
    def default() -> dict:
        return {"path": None, "exists": False, "is_socket": False}


PLATFORM_COMMAND = 'echo "machine=$(uname -m)"; if [ -d /run/systemd/system ]; then echo systemd=yes; fi'


def platform_from(values: dict[str, str]) -> dict:
    """The ``PLATFORM_COMMAND`` keys of parsed ``key=value`` output."""
    return {"machine": values.get("machine", ""), "systemd": values.get("systemd") == "yes"}


class BuildHostPlatform(FactBase[dict]):
    """The machine architecture (``uname -m``) and whether systemd is the running init.

    .. code:: python

        {"machine": "x86_64", "systemd": True}
    """

    command = in_c_locale(PLATFORM_COMMAND)

    def process(self, output: list[str]) -> dict:
        return platform_from(parse_key_values(output))

    @staticmethod
    def default() -> None:
        """None: the host could not be read (pyinfra then fails that host alone)."""
        return None


class ReleaseFiles(FactBase[list]):
    """Files of one release archive that exist, as its manifest lists them ([] without a manifest).

    The manifest (see ``manifest_path``) is the proof that the files are ours: without one, none is.

    .. code:: python

        ["/usr/local/bin/buildctl", "/usr/local/bin/buildkitd"]  # [] when none is there
    """

    def command(self, manifest: str) -> str:
        # One path a line, read whole: a file name with a space or a * is one name.
        return in_c_locale(
            f'while IFS= read -r path; do if [ -e "$path" ] || [ -L "$path" ]; then printf \'%s\\n\' "$path"; fi; '
            f"done < {shlex.quote(manifest)} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> list:
        return [line.strip() for line in output if line.strip()]

    @staticmethod
    def default() -> list:
        return []


def parse_systemd_timestamp(value: str | None) -> datetime | None:
    """``Sun 2026-11-29 18:01:02.123456 UTC`` (``--timestamp=us+utc``; whole seconds before systemd 248).

    The day name is skipped, so a translated one (``So``) parses alike. Anything
    else is a ``FactProcessError``: pyinfra reports it for this host alone.
    """
    if not value or value == "n/a":
        return None
    moment = value.partition(" ")[2]
    layout = "%Y-%m-%d %H:%M:%S.%f UTC" if "." in moment else "%Y-%m-%d %H:%M:%S UTC"
    try:
        return datetime.strptime(moment, layout).replace(tzinfo=timezone.utc)
    except ValueError as error:
        raise FactProcessError(f"unexpected systemd timestamp {value!r}") from error


def parse_stat_time(value: str) -> datetime:
    """``2026-11-29 18:01:02.123456789 +0000`` (``TZ=UTC stat -c %z``) to a datetime (microseconds)."""
    try:
        return datetime.strptime(value[:26], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    except ValueError as error:
        raise FactProcessError(f"unexpected stat change time {value!r}") from error


def started_before(started: str | None, changed: datetime | None) -> bool:
    """Whether a unit that became active at ``started`` (systemd's text) did so before ``changed``.

    Compared at the precision systemd printed. Before systemd 248 that is whole
    seconds, and a unit that became active in the same second as its inputs last
    changed counts as started after them: a rerun must not restart what it has just
    started. The price: on those hosts, a run cut off less than a second after a
    unit started, between installing a file and restarting the unit, goes unnoticed
    until the next change.

    >>> started_before("Sun 2026-11-29 18:01:02 UTC", datetime(2026, 11, 29, 18, 1, 2, 400000, timezone.utc))
    False
    """
    moment = parse_systemd_timestamp(started)
    if moment is None or changed is None:
        return False
    if "." not in started:
        changed = changed.replace(microsecond=0)
    return moment < changed


UNIT_PROPERTIES = "UnitFileState,ActiveState,NeedDaemonReload,ActiveEnterTimestamp"

UNITS = {"socket": SOCKET_UNIT, "service": SERVICE_UNIT, "containerd": CONTAINERD_UNIT}


def _unit_inputs(bin_dir: str, unit_dir: str, full_prefix: str) -> dict[str, tuple[str, ...]]:
    """What each unit runs: a change to any of these makes a running unit stale."""
    return {
        "socket": (f"{unit_dir}/{SOCKET_UNIT}",),
        "service": (f"{bin_dir}/buildkitd", BUILDKIT_CONFIG, f"{unit_dir}/{SERVICE_UNIT}"),
        "containerd": (f"{full_prefix}/bin/containerd", CONTAINERD_CONFIG, f"{unit_dir}/{CONTAINERD_UNIT}"),
    }


def unit_state_command(bin_dir: str, unit_dir: str, full_prefix: str = DEFAULT_FULL_PREFIX) -> str:
    """The units' state (``unit.`` lines, a bare ``unit.`` between units, in ``UNITS`` order) and their inputs' ctimes.

    Few processes whatever the number of files: this runs on every host on every run.
    """
    ctimes = "; ".join(
        f"TZ=UTC stat -c 'ctime.{unit}=%z' {' '.join(shlex.quote(path) for path in paths)} 2>/dev/null"
        for unit, paths in _unit_inputs(bin_dir, unit_dir, full_prefix).items()
    )
    units = f"-p {UNIT_PROPERTIES} {' '.join(UNITS.values())}"
    # --timestamp (microseconds) works from systemd 248 (247 takes it and prints whole seconds);
    # older ones print whole seconds in TZ's zone.
    return (
        f"{{ TZ=UTC systemctl show --timestamp=us+utc {units} 2>/dev/null || TZ=UTC systemctl show {units}; }} "
        f"2>/dev/null | sed 's/^/unit./'; {ctimes}; true"
    )


def parse_unit_freshness(lines: list[str]) -> dict:
    """Lines of ``unit_state_command`` to ``{"socket": {...}, "service": {...}, "containerd": {...}}``."""
    blocks: list[dict[str, str]] = [{} for _ in UNITS]
    index = 0
    ctimes: dict[str, list[datetime]] = {unit: [] for unit in UNITS}
    for line in lines:
        if line.startswith("unit."):
            key, _, value = line[len("unit.") :].partition("=")
            if key:
                blocks[index][key] = value
            else:
                index = min(index + 1, len(UNITS) - 1)
        elif line.startswith("ctime."):
            unit, _, changed = line[len("ctime.") :].partition("=")
            if unit in ctimes and changed:
                ctimes[unit].append(parse_stat_time(changed))
    state = {}
    for unit, values in zip(UNITS, blocks, strict=True):
        active = values.get("ActiveState") == "active"
        state[unit] = {
            "enabled": values.get("UnitFileState") == "enabled",
            "active": active,
            "needs_daemon_reload": values.get("NeedDaemonReload") == "yes",
            "stale": active and started_before(values.get("ActiveEnterTimestamp"), max(ctimes[unit], default=None)),
        }
    return state


def full_readme_command(full_prefix: str) -> str:
    """``full.COMPONENT=VERSION`` lines from the full archive's README.md, nothing when it is absent.

    The component list ends at the first ``## `` heading (upstream's license list follows).
    """
    readme = shlex.quote(f"{full_prefix}/{FULL_README}")
    pattern = "s/^- \\([^:]*\\): v\\{0,1\\}\\(.*\\)$/full.\\1=\\2/p"
    return f"sed -n '/^## /q; {pattern}' {readme} 2>/dev/null || true"


def parse_full_readme(lines: list[str]) -> dict:
    components = {
        line[len("full.") :].split("=", 1)[0]: line.split("=", 1)[1]
        for line in lines
        if line.startswith("full.") and "=" in line
    }
    return {"version": components.get("nerdctl"), "components": components}


class BuildkitUnitFreshness(FactBase[dict]):
    """The BuildKit units' (and containerd's) state, and whether they run what is on disk.

    A unit is stale when it is active and became active before its inputs last
    changed (the socket: its unit file; the service: ``buildkitd``, its config and
    its unit file), as after a run that was cut between an install and its restart;
    see ``started_before`` for systemd before 248, which reports whole seconds.

    .. code:: python

        {"socket": {"enabled": True, "active": True, "needs_daemon_reload": False, "stale": False},
         "service": {"enabled": False, "active": True, "needs_daemon_reload": False, "stale": True}}
    """

    def command(
        self, bin_dir: str = DEFAULT_BIN_DIR, unit_dir: str = UNIT_DIR, full_prefix: str = DEFAULT_FULL_PREFIX
    ) -> str:
        return in_c_locale(unit_state_command(bin_dir, unit_dir, full_prefix))

    def process(self, output: list[str]) -> dict:
        return parse_unit_freshness(output)

    @staticmethod
    def default() -> dict:
        return parse_unit_freshness([])


def managed_paths_command(paths: tuple[str, ...]) -> str:
    """``path=PATH|raw mode|mode|user|group`` for each of ``paths`` that exists, ``sha256sum`` of the files,
    and ``marked=PATH`` for each file that carries this package's ``MARKER`` line (proof that it is ours).

    Three processes whatever the number of paths: this runs on every host on every run.
    """
    quoted = " ".join(shlex.quote(path) for path in paths)
    return (
        f"stat -c 'path=%n|{STAT_FIELDS}' {quoted} 2>/dev/null; sha256sum {quoted} 2>/dev/null; "
        f"grep -lxF {shlex.quote(MARKER)} {quoted} 2>/dev/null | sed 's/^/marked=/'; true"
    )


def created_folders_command(listing: str = CREATED_FOLDERS) -> str:
    """``folder=PATH|raw mode|mode|user|group`` for each folder in ``listing`` (one a line) that exists.

    Two processes whatever the number of folders.
    """
    quoted = shlex.quote(listing)
    return (
        f"if [ -f {quoted} ]; then tr '\\n' '\\0' < {quoted} | "
        f"xargs -0 -r stat -c 'folder=%n|{STAT_FIELDS}' 2>/dev/null; fi; true"
    )


def _parse_stat_line(line: str, prefix: str) -> tuple[str, dict] | None:
    """A ``PREFIX=PATH|raw mode|mode|user|group`` line to ``(path, {"kind", "mode", "user", "group"})``."""
    if not line.startswith(prefix):
        return None
    path, raw_mode, mode, user, group = line[len(prefix) :].rsplit("|", 4)
    return path, {"kind": file_kind(raw_mode), "mode": mode, "user": user, "group": group}


def parse_created_folders(lines: list[str]) -> dict[str, dict]:
    """Lines of ``created_folders_command`` to ``{path: {"kind", "mode", "user", "group"}}``."""
    return dict(found for found in (_parse_stat_line(line, "folder=") for line in lines) if found)


def parse_managed_paths(lines: list[str]) -> dict[str, dict]:
    """Lines of ``managed_paths_command`` to ``{path: {"kind", "mode", "user", "group", "sha256", "ours"}}``."""
    paths: dict[str, dict] = {}
    digests = {}
    marked = set()
    for line in lines:
        found = _parse_stat_line(line, "path=")
        if found:
            path, values = found
            paths[path] = {**values, "sha256": None, "ours": False}
        elif line.startswith("marked="):
            marked.add(line[len("marked=") :])
        else:
            digest, _, path = line.partition("  ")
            if SHA256_LINE.match(digest):
                digests[path] = digest
    for path, digest in digests.items():
        if path in paths:
            paths[path]["sha256"] = digest
    for path in marked & paths.keys():
        paths[path]["ours"] = True
    return paths


class BuildHostState(FactBase[dict]):
    """Everything the build-host deploys decide from, in one remote command.

    The platform, the installed versions, the managed files and folders (mode,
    owner, SHA-256), the folders the install created (mode, owner), whether the
    socket group exists, the units' state, and what else runs BuildKit
    (``facts.foreign``), so a converged host costs one round trip.

    .. code:: python

        {"machine": "x86_64", "systemd": True, "nerdctl": "2.3.5",
         "buildkit": {"buildkitd": "0.12.5", "buildctl": "0.12.5"},
         "paths": {"/etc/nerdctl/nerdctl.toml": {"kind": "file", "mode": "644", ...}},
         "created_dirs": {"/opt/tools": {"kind": "dir", "mode": "755", "user": "root", "group": "root"}},
         "group_exists": True, "units": {"socket": {...}, "service": {...}, "containerd": {...}},
         "full": {"version": None, "components": {}},
         "foreign_buildkit": {"units": [], "processes": []}}
    """

    def command(
        self,
        bin_dir: str = DEFAULT_BIN_DIR,
        paths: tuple[str, ...] = (),
        group: str | None = None,
        unit_dir: str = UNIT_DIR,
        full_prefix: str = DEFAULT_FULL_PREFIX,
        full_manifests: str = manifest_glob("nerdctl-full"),
    ) -> str:
        parts = [
            PLATFORM_COMMAND,
            full_readme_command(full_prefix),
            f"for manifest in {shell_glob(full_manifests)}; do "
            'if [ -f "$manifest" ]; then echo full_managed=yes; break; fi; done',
            _version_command(f"{bin_dir}/nerdctl"),
            _buildkit_version_command(bin_dir),
            managed_paths_command(tuple(paths)),
            created_folders_command(),
            unit_state_command(bin_dir, unit_dir, full_prefix),
            foreign_buildkit_command(),
        ]
        if group:
            parts.append(f"if getent group {shlex.quote(group)} >/dev/null; then echo group=yes; fi")
        return in_c_locale("; ".join(parts))

    def process(self, output: list[str]) -> dict:
        values = parse_key_values(output)
        return {
            **platform_from(values),
            "nerdctl": parse_nerdctl_version(output),
            "buildkit": parse_buildkit_versions(output),
            "paths": parse_managed_paths(output),
            "created_dirs": parse_created_folders(output),
            "group_exists": values.get("group") == "yes",
            "units": parse_unit_freshness(output),
            "full": {**parse_full_readme(output), "managed": values.get("full_managed") == "yes"},
            "foreign_buildkit": parse_foreign_buildkit(output),
        }

    @staticmethod
    def default() -> None:
        """None: the host could not be read (pyinfra then fails that host alone, and the deploys skip it)."""
        return None


class NerdctlFull(FactBase[dict]):
    """The installed nerdctl-full release, its components (from its README.md), and containerd's state.

    .. code:: python

        {"version": "2.3.5", "components": {"nerdctl": "2.3.5", "containerd": "2.1.4", ...},
         "containerd_active": True}  # version None when no full archive is installed
    """

    def command(self, full_prefix: str = DEFAULT_FULL_PREFIX) -> str:
        return in_c_locale(
            f'{full_readme_command(full_prefix)}; echo "containerd=$(systemctl is-active {CONTAINERD_UNIT} 2>/dev/null)"'
        )

    def process(self, output: list[str]) -> dict:
        return {
            **parse_full_readme(output),
            "containerd_active": parse_key_values(output).get("containerd") == "active",
        }

    @staticmethod
    def default() -> dict:
        return {"version": None, "components": {}, "containerd_active": False}


WORKER_LINE = re.compile(r"^(\s*)([^\t]+?):\t+(.*)$")


def parse_buildkit_workers(lines: list[str]) -> list[dict] | None:
    """``buildctl debug workers -v`` output to ``[{"id", "executor", "namespace", "platforms"}]``; None when empty.

    >>> parse_buildkit_workers(["ID:\\tw1", "Platforms:\\tlinux/amd64", "Labels:",
    ...     "\\torg.mobyproject.buildkit.worker.executor:\\tcontainerd"])
    [{'id': 'w1', 'executor': 'containerd', 'namespace': None, 'platforms': ['linux/amd64']}]
    """
    workers: list[dict] = []
    for line in lines:
        match = WORKER_LINE.match(line.rstrip())
        if not match:
            continue
        indent, key, value = match.groups()
        if not indent and key == "ID":
            workers.append({"id": value.strip(), "executor": None, "namespace": None, "platforms": []})
        elif workers and not indent and key == "Platforms":
            workers[-1]["platforms"] = [item for item in value.strip().split(",") if item]
        elif workers and key == "org.mobyproject.buildkit.worker.executor":
            workers[-1]["executor"] = value.strip()
        elif workers and key == "org.mobyproject.buildkit.worker.containerd.namespace":
            workers[-1]["namespace"] = value.strip()
    return workers or None


class BuildkitWorkers(FactBase):
    """BuildKit's workers, asked through its socket (which starts a socket-activated buildkitd), within ``timeout`` s.

    .. code:: python

        [{"id": "qz1...", "executor": "containerd", "namespace": "k8s.io",
          "platforms": ["linux/amd64", "linux/386"]}]  # None when BuildKit does not answer
    """

    def command(self, bin_dir: str = DEFAULT_BIN_DIR, address: str = BUILDKIT_ADDRESS, timeout: int = 30) -> str:
        buildctl = shlex.quote(f"{bin_dir}/buildctl")
        return in_c_locale(
            f"if [ -x {buildctl} ]; then timeout {int(timeout)} {buildctl} --addr {shlex.quote(address)} "
            "debug workers -v 2>/dev/null || true; fi"
        )

    def process(self, output: list[str]) -> list[dict] | None:
        return parse_buildkit_workers(output)

    @staticmethod
    def default() -> None:
        return None


from .rootless import RootlessState  # noqa: E402  (it builds on the helpers above)

__all__ = [
    "BuildHostPlatform",
    "BuildHostState",
    "BuildkitSocket",
    "BuildkitUnitFreshness",
    "BuildkitWorkers",
    "BuildkitVersion",
    "ContainerdSocket",
    "NerdctlFull",
    "NerdctlVersion",
    "ReleaseFiles",
    "RootlessState",
]
