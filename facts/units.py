"""BuildKit's and containerd's units and sockets: state, freshness, and the workers BuildKit answers with."""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone

from pyinfra.api import FactBase

try:
    from pyinfra.api import FactProcessError
except ImportError:  # pyinfra before 3.6: any error in a fact's process() stops the run, whatever its class
    from pyinfra.api.exceptions import FactError as FactProcessError  # type: ignore[assignment]

from ..layout import (
    BUILDKIT_ADDRESS,
    BUILDKIT_CONFIG,
    CONTAINERD_CONFIG,
    CONTAINERD_SOCKET,
    CONTAINERD_UNIT,
    DEFAULT_BIN_DIR,
    DEFAULT_FULL_PREFIX,
    SERVICE_UNIT,
    SOCKET_UNIT,
    TLS_FILES,
    UNIT_DIR,
    UNITS,
)
from .common import in_c_locale, parse_key_values, parse_stat, stat_command
from .types import BuildkitSocketDict, ContainerdSocketDict, UnitsDict, UnitStateDict, WorkerDict


def parse_socket_unit(lines: list[str]) -> BuildkitSocketDict:
    values = parse_key_values(lines)
    listen = values.get("Listen", "").split(" (")[0] or None
    return {
        "enabled": values.get("UnitFileState") == "enabled",
        "active": values.get("ActiveState") == "active",
        "path": listen,
        **parse_stat(values.get("stat")),
    }


class BuildkitSocket(FactBase[BuildkitSocketDict]):
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
            f'if [ -n "$listen" ]; then {stat_command(chr(34) + "$listen" + chr(34))}; fi'
        )

    def process(self, output: list[str]) -> BuildkitSocketDict:
        return parse_socket_unit(output)

    @staticmethod
    def default() -> BuildkitSocketDict:
        return parse_socket_unit([])


class ContainerdSocket(FactBase[ContainerdSocketDict]):
    """Whether the containerd socket exists and is a socket (``unix://`` prefix accepted).

    .. code:: python

        {"path": "/run/containerd/containerd.sock", "exists": True, "is_socket": True}
    """

    def command(self, address: str = CONTAINERD_SOCKET) -> str:
        path = shlex.quote(address.removeprefix("unix://"))
        return in_c_locale(f"echo path={path}; {stat_command(path)}")

    def process(self, output: list[str]) -> ContainerdSocketDict:
        values = parse_key_values(output)
        found = parse_stat(values.get("stat"))
        return {"path": values.get("path"), "exists": found["exists"], "is_socket": found["is_socket"]}

    @staticmethod
    def default() -> ContainerdSocketDict:
        return {"path": None, "exists": False, "is_socket": False}


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
    if started is None or moment is None or changed is None:
        return False
    if "." not in started:
        changed = changed.replace(microsecond=0)
    return moment < changed


UNIT_PROPERTIES = "UnitFileState,ActiveState,NeedDaemonReload,ActiveEnterTimestamp"


def unit_inputs(bin_dir: str, unit_dir: str, full_prefix: str) -> dict[str, tuple[str, ...]]:
    """What each unit runs: a change to any of these makes a running unit stale."""
    return {
        "socket": (f"{unit_dir}/{SOCKET_UNIT}",),
        "service": (f"{bin_dir}/buildkitd", BUILDKIT_CONFIG, f"{unit_dir}/{SERVICE_UNIT}", *TLS_FILES),
        "containerd": (f"{full_prefix}/bin/containerd", CONTAINERD_CONFIG, f"{unit_dir}/{CONTAINERD_UNIT}"),
    }


def unit_state_command(bin_dir: str, unit_dir: str, full_prefix: str = DEFAULT_FULL_PREFIX) -> str:
    """The units' state (``unit.`` lines, a bare ``unit.`` between units, in ``UNITS`` order) and their inputs' ctimes.

    Few processes whatever the number of files: this runs on every host on every run.
    """
    ctimes = "; ".join(
        f"TZ=UTC stat -c 'ctime.{unit}=%z' {' '.join(shlex.quote(path) for path in paths)} 2>/dev/null"
        for unit, paths in unit_inputs(bin_dir, unit_dir, full_prefix).items()
    )
    units = f"-p {UNIT_PROPERTIES} {' '.join(UNITS.values())}"
    # --timestamp (microseconds) works from systemd 248 (247 takes it and prints whole seconds);
    # older ones print whole seconds in TZ's zone.
    return (
        f"{{ TZ=UTC systemctl show --timestamp=us+utc {units} 2>/dev/null || TZ=UTC systemctl show {units}; }} "
        f"2>/dev/null | sed 's/^/unit./'; {ctimes}; true"
    )


def parse_unit_freshness(lines: list[str]) -> UnitsDict:
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
    state: dict[str, UnitStateDict] = {}
    for unit, values in zip(UNITS, blocks, strict=True):
        active = values.get("ActiveState") == "active"
        state[unit] = {
            "enabled": values.get("UnitFileState") == "enabled",
            "active": active,
            "needs_daemon_reload": values.get("NeedDaemonReload") == "yes",
            "stale": active and started_before(values.get("ActiveEnterTimestamp"), max(ctimes[unit], default=None)),
        }
    return state


class BuildkitUnitFreshness(FactBase[UnitsDict]):
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

    def process(self, output: list[str]) -> UnitsDict:
        return parse_unit_freshness(output)

    @staticmethod
    def default() -> UnitsDict:
        return parse_unit_freshness([])


WORKER_LINE = re.compile(r"^(\s*)([^\t]+?):\t+(.*)$")


def parse_buildkit_workers(lines: list[str]) -> list[WorkerDict] | None:
    """``buildctl debug workers -v`` output to ``[{"id", "executor", "namespace", "platforms"}]``; None when empty.

    >>> parse_buildkit_workers(["ID:\\tw1", "Platforms:\\tlinux/amd64", "Labels:",
    ...     "\\torg.mobyproject.buildkit.worker.executor:\\tcontainerd"])
    [{'id': 'w1', 'executor': 'containerd', 'namespace': None, 'platforms': ['linux/amd64']}]
    """
    workers: list[WorkerDict] = []
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


class BuildkitWorkers(FactBase[list[WorkerDict] | None]):
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

    def process(self, output: list[str]) -> list[WorkerDict] | None:
        return parse_buildkit_workers(output)

    @staticmethod
    def default() -> None:
        return None
