"""What else runs BuildKit on a host: unit files this package did not write, and root's buildkitd processes.

Part of the ``BuildHostState`` command (one remote command per host); pure parsing, unit-tested.
"""

from __future__ import annotations

import re
import shlex

from ..layout import BUILDKIT_SOCKET, MARKER, SERVICE_UNIT, UNIT_SEARCH_DIRS
from .types import ForeignBuildkitDict, ForeignProcessDict, ForeignUnitDict

DEFAULT_ADDRESS = BUILDKIT_SOCKET  # where a root buildkitd listens without --addr
ENABLED_STATES = ("enabled", "enabled-runtime")
ACTIVE_STATES = ("active", "activating", "reloading")
UNIT_LINE = re.compile(r"^(/.+?\.(?:service|socket)):(\s*(?:ExecStart|ListenStream|User)\s*=.*)$")
# grep patterns (basic regular expressions): a service that runs buildkitd, a socket on a BuildKit path, its user.
RUNS_BUILDKIT = (
    "^[[:space:]]*ExecStart[[:space:]]*=.*buildkitd",
    "^[[:space:]]*ListenStream[[:space:]]*=.*buildkit",
)
USER_LINE = "^[[:space:]]*User[[:space:]]*="
# Flags with which buildkitd prints and exits (Go's flag parsing takes one dash or two): no daemon, no setup.
ONE_SHOT_FLAGS = frozenset({"-v", "-version", "--version", "-h", "-help", "--help"})


def foreign_buildkit_command(unit_dirs: tuple[str, ...] = UNIT_SEARCH_DIRS, service: str = SERVICE_UNIT) -> str:
    """``foreign.line=FILE:LINE`` of unit files without ``MARKER`` that run buildkitd or listen on a BuildKit
    path, ``foreign.process=PID|UNIT|ARGS`` for each buildkitd of root in this mount namespace, and the
    state of their units (and of ``service``, for its MainPID) as ``foreign.unit.`` lines.

    A rootless user's buildkitd (not uid 0) and one inside a container (another mount namespace)
    are not listed: neither can hold this host's socket. A host with no buildkitd running costs three ``grep``.
    """
    globs = " ".join(f"{directory}/*.service {directory}/*.socket" for directory in unit_dirs)
    runs = " ".join(f"-e {shlex.quote(pattern)}" for pattern in RUNS_BUILDKIT)
    each = "tr '\\n' '\\0' | xargs -0 -r"  # one argument per line, whatever the characters in it
    process_units = "sed -n 's/^foreign[.]process=[0-9]*|\\([^|]*[.]service\\)|.*/\\1/p'"
    return (
        f"files=$(grep -s -l {runs} {globs} | {each} grep -s -L -x -F {shlex.quote(MARKER)}); "
        f'if [ -n "$files" ]; then printf \'%s\\n\' "$files" | {each} grep -s -H {runs} -e {shlex.quote(USER_LINE)} '
        "| sed 's/^/foreign.line=/'; fi; "
        "processes=$(grep -s -l -x 'Name:.buildkitd' /proc/[0-9]*/status | while IFS= read -r status; do "
        "pid=${status#/proc/}; pid=${pid%/status}; "
        '[ -n "${own:-}" ] || own=$(readlink /proc/self/ns/mnt); '
        '[ "$(readlink "/proc/$pid/ns/mnt")" = "$own" ] || continue; '
        'uid=; { while read -r key value _; do [ "$key" = Uid: ] && uid=$value; done < "$status"; } 2>/dev/null; '
        '[ "$uid" = 0 ] || continue; '
        "unit=; { while IFS= read -r line; do case $line in 0::*|*:name=systemd:*) unit=${line##*/};; esac; "
        'done < "/proc/$pid/cgroup"; } 2>/dev/null; '
        "echo \"foreign.process=$pid|$unit|$(tr '\\0' ' ' < \"/proc/$pid/cmdline\" 2>/dev/null)\"; done); "
        'if [ -n "$processes" ]; then printf \'%s\\n\' "$processes"; fi; '
        'if [ -n "$files$processes" ]; then '
        f"{{ printf '%s\\n' \"$files\" | sed 's|.*/||'; printf '%s\\n' \"$processes\" | {process_units}; "
        f"echo {shlex.quote(service)}; }} | sed '/^$/d' | {each} "
        "systemctl show -p Id,FragmentPath,UnitFileState,ActiveState,MainPID 2>/dev/null | sed 's/^/foreign.unit./'; "
        "fi; true"
    )


def buildkitd_address(args: str) -> str:
    """The socket a buildkitd command line listens on (``fd://`` when systemd's socket); the default without ``--addr``.

    >>> buildkitd_address("/usr/local/bin/buildkitd --oci-worker=false --addr unix:///run/b.sock")
    '/run/b.sock'
    """
    words = args.split()
    for index, word in enumerate(words):
        if word == "--addr" and index + 1 < len(words):
            return words[index + 1].removeprefix("unix://")
        if word.startswith("--addr="):
            return word[len("--addr=") :].removeprefix("unix://")
    return DEFAULT_ADDRESS


def is_one_shot(args: str) -> bool:
    """Whether a buildkitd command line only prints its version or help and exits (``buildkitd --version``).

    An empty command line is a process that exited while the fact read it: no daemon either.

    >>> is_one_shot("/usr/local/bin/buildkitd --version"), is_one_shot("buildkitd --addr fd://")
    (True, False)
    """
    words = args.split()[1:]
    if not args.strip() or words[:1] == ["help"]:
        return True
    return any(word.partition("=")[0] in ONE_SHOT_FLAGS for word in words)


def _unit_blocks(lines: list[str]) -> dict[str, dict[str, str]]:
    """``foreign.unit.`` lines (``systemctl show`` of several units, a bare prefix between them) by unit name."""
    blocks: list[dict[str, str]] = [{}]
    for line in lines:
        if not line.startswith("foreign.unit."):
            continue
        key, _, value = line[len("foreign.unit.") :].partition("=")
        if key:
            blocks[-1][key] = value
        elif blocks[-1]:
            blocks.append({})
    return {block["Id"]: block for block in blocks if block.get("Id")}


def _unit_files(lines: list[str]) -> dict[str, dict[str, str]]:
    """``foreign.line=`` lines to ``{file: {"ExecStart": ..., "ListenStream": ..., "User": ...}}`` (first of each)."""
    files: dict[str, dict[str, str]] = {}
    for line in lines:
        match = UNIT_LINE.match(line[len("foreign.line=") :]) if line.startswith("foreign.line=") else None
        if not match:
            continue
        path, text = match.groups()
        key, _, value = text.strip().partition("=")
        files.setdefault(path, {}).setdefault(key.strip(), value.strip())
    return files


def _unit_socket(values: dict[str, str]) -> str:
    if "ListenStream" in values:
        return values["ListenStream"].replace("%t", "/run").removeprefix("unix://")
    return buildkitd_address(values.get("ExecStart", ""))


def parse_foreign_buildkit(lines: list[str]) -> ForeignBuildkitDict:
    """Lines of ``foreign_buildkit_command`` to what else runs BuildKit.

    ``units``: unit files without this package's marker that systemd uses for their unit (a file
    shadowed by one of the same name earlier in the search path is not), that run buildkitd as
    root or listen on a BuildKit path. ``processes``: root's buildkitd daemons (not a one-shot
    ``buildkitd --version`` or ``--help``, nor one that exited meanwhile), each with its
    unit, its socket, and whether it is ``main`` (the MainPID of its unit) and
    ``socket_activated`` (``--addr fd://``, as this package's service runs it).

    .. code:: python

        {"units": [{"unit": "buildkitd.service", "path": "/etc/systemd/system/buildkitd.service",
                    "socket": "/run/buildkit/buildkitd.sock", "enabled": True, "active": True}],
         "processes": [{"pid": 812, "unit": "buildkitd.service", "socket": "/run/buildkit/buildkitd.sock",
                        "main": True, "socket_activated": False, "enabled": True}]}
    """
    states = _unit_blocks(lines)
    units: list[ForeignUnitDict] = []
    for path, values in _unit_files(lines).items():
        name = path.rsplit("/", 1)[1]
        state = states.get(name, {})
        if state.get("FragmentPath") != path or values.get("User", "root") not in ("root", "0"):
            continue
        units.append(
            {
                "unit": name,
                "path": path,
                "socket": _unit_socket(values),
                "enabled": state.get("UnitFileState") in ENABLED_STATES,
                "active": state.get("ActiveState") in ACTIVE_STATES,
            }
        )
    processes: list[ForeignProcessDict] = []
    for line in lines:
        if not line.startswith("foreign.process="):
            continue
        pid, unit, args = line[len("foreign.process=") :].split("|", 2)
        if is_one_shot(args):
            continue
        address = buildkitd_address(args)
        processes.append(
            {
                "pid": int(pid),
                "unit": unit or None,
                "socket": address,
                "main": pid == states.get(unit, {}).get("MainPID"),
                "socket_activated": address == "fd://",
                "enabled": states.get(unit, {}).get("UnitFileState") in ENABLED_STATES,
            }
        )
    return {"units": units, "processes": processes}
