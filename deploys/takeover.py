"""Another BuildKit setup on a host (the usual recipe, by hand): refuse it, or take it over (pure: no host).

Decided from the ``foreign_buildkit`` part of ``BuildHostState`` and the ``ours`` flag of our unit
paths. Without ``buildkit_takeover`` a host with another setup is refused before anything changes;
with it, one step stops and disables what the other setup runs, and the plan then treats our
units as they will be once that step ran.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from .. import layout
from ..facts.foreign import DEFAULT_ADDRESS
from ..facts.types import BuildHostStateDict, ForeignProcessDict, ForeignUnitDict
from . import commands as sh

OUR_UNIT_PATHS = {layout.SOCKET_PATH: "socket", layout.SERVICE_PATH: "service"}
OUR_UNITS = {name: key for key, name in layout.UNITS.items() if key != "containerd"}
STOP_SECONDS = 20


class ForeignSetupError(ValueError):
    """A host where something else runs BuildKit, and ``buildkit_takeover`` is off."""


@dataclass(frozen=True)
class ForeignSetup:
    """One thing that runs BuildKit and is not this package's, and what taking it over runs."""

    description: str
    commands: tuple[str, ...] = ()
    units: tuple[str, ...] = ()  # the units the commands stop


def _unit_commands(unit: str, enabled: bool, active: bool) -> tuple[str, ...]:
    if enabled:
        return (sh.systemctl("disable", "--now", unit),)
    return (sh.systemctl("stop", unit),) if active else ()


def _state_words(enabled: bool, active: bool) -> str:
    return f"{'enabled' if enabled else 'disabled'}, {'active' if active else 'inactive'}"


def foreign_setups(state: BuildHostStateDict) -> tuple[ForeignSetup, ...]:
    """What else runs BuildKit on a host whose ``BuildHostState`` is ``state``.

    A unit counts when it is enabled or active; a file at our unit paths without our marker
    counts always (a run would overwrite it); a root buildkitd daemon counts unless it runs in
    ``buildkit.service`` started through the socket, as our unit starts it (else it is left over
    from an older definition of that unit); the fact lists no one-shot ``buildkitd --version``.
    A buildkitd that is the MainPID of another unit is stopped with its unit; one that is not (started by hand, in a login's scope or under another
    daemon) by its pid, and never its unit: that may be sshd's.
    """
    foreign = state["foreign_buildkit"]
    setups: list[ForeignSetup] = []
    covered: set[str] = set()  # the units already stopped by a setup found before
    setups += _unit_setups(foreign["units"], covered)
    setups += _our_path_setups(state, covered)
    setups += _process_setups(foreign["processes"], covered)
    return tuple(setups)


def _unit_setups(units: list[ForeignUnitDict], covered: set[str]) -> list[ForeignSetup]:
    """Another unit that runs BuildKit, enabled or active, or one at our unit paths."""
    setups = []
    for unit in units:
        at_our_path = unit["path"] in OUR_UNIT_PATHS
        if not (unit["enabled"] or unit["active"] or at_our_path):
            continue
        covered.add(unit["unit"])
        setups.append(
            ForeignSetup(
                f"{unit['unit']} ({unit['path']}, socket {unit['socket']}, "
                f"{_state_words(unit['enabled'], unit['active'])})",
                _unit_commands(unit["unit"], unit["enabled"], unit["active"]),
                (unit["unit"],),
            )
        )
    return setups


def _our_path_setups(state: BuildHostStateDict, covered: set[str]) -> list[ForeignSetup]:
    """A file at our unit paths without our marker: a run would overwrite it."""
    setups = []
    for path, key in OUR_UNIT_PATHS.items():
        name = path.rsplit("/", 1)[1]
        found = state["paths"].get(path)
        if name in covered or not found or found["ours"]:
            continue
        covered.add(name)
        ours = state["units"][key]
        setups.append(
            ForeignSetup(
                f"{path} (not written by pyinfra-nerdctl, {_state_words(ours['enabled'], ours['active'])})",
                _unit_commands(name, ours["enabled"], ours["active"]),
                (name,),
            )
        )
    return setups


def _process_setups(processes: list[ForeignProcessDict], covered: set[str]) -> list[ForeignSetup]:
    """A root buildkitd daemon that is not ours: stopped with its unit when it is its MainPID, else by its pid."""
    setups = []
    for process in processes:
        unit = process["unit"]
        # Socket-activated in our unit is ours, MainPID or not: a concurrent run's check may stop it
        # between the fact's read of the process and of its unit.
        ours = unit == layout.SERVICE_UNIT and process["socket_activated"]
        if ours or unit in covered:
            continue
        if process["main"] and unit is not None and unit.endswith(".service"):
            covered.add(unit)
            older = " from an older definition" if unit == layout.SERVICE_UNIT else ""
            setups.append(
                ForeignSetup(
                    f"buildkitd process {process['pid']} of {unit}{older} (socket {process['socket']})",
                    _unit_commands(unit, process["enabled"], True),
                    (unit,),
                )
            )
        else:
            setups.append(
                ForeignSetup(
                    f"buildkitd process {process['pid']} ({unit or 'no unit'}, socket {process['socket']})",
                    (sh.stop_buildkitd_process(process["pid"], STOP_SECONDS),),
                )
            )
    return setups


def refusal(setups: tuple[ForeignSetup, ...]) -> str:
    """The one-line error for a host with another BuildKit setup and ``buildkit_takeover`` off."""
    return (
        f"BuildKit already runs here from another setup: {'; '.join(setup.description for setup in setups)}. "
        "Set buildkit_takeover=true to stop and disable it and run this package's units instead; "
        "nothing was changed"
    )


@dataclass(frozen=True)
class Takeover:
    """The commands that stop what else runs BuildKit, and the host's state once they ran.

    ``busy_sockets``: where the running daemons these commands stop take clients, so that
    their builds in flight are waited for first.
    """

    commands: tuple[str, ...]
    state: BuildHostStateDict
    busy_sockets: tuple[str, ...] = ()


def _process_socket(process: ForeignProcessDict, units: list[ForeignUnitDict]) -> str:
    """Where a buildkitd takes clients: its ``--addr``, or for ``fd://`` its unit's socket (the usual path else)."""
    if process["socket"] != "fd://":
        return process["socket"]
    name = (process["unit"] or "").removesuffix(".service")
    sockets = [unit["socket"] for unit in units if unit["unit"] == f"{name}.socket"]
    return sockets[0] if sockets else DEFAULT_ADDRESS


def busy_sockets(state: BuildHostStateDict, stopped: tuple[str, ...]) -> tuple[str, ...]:
    """The sockets of the running buildkitd processes that taking over stops."""
    foreign = state["foreign_buildkit"]
    found = []
    for process in foreign["processes"]:
        ours = process["unit"] == layout.SERVICE_UNIT and process["main"] and process["socket_activated"]
        if not ours or layout.SERVICE_UNIT in stopped or layout.SOCKET_UNIT in stopped:
            found.append(_process_socket(process, foreign["units"]))
    return tuple(dict.fromkeys(found))


def plan_takeover(state: BuildHostStateDict, allowed: bool) -> Takeover:
    """Refuse (``ForeignSetupError``) a host with another BuildKit setup unless ``allowed``; else take it over.

    Our units that the takeover stops count as disabled and inactive afterwards, and our socket,
    if it stays active, as stale: the other daemon may have taken its path, so it is restarted.
    """
    setups = foreign_setups(state)
    if not setups:
        return Takeover((), state)
    if not allowed:
        raise ForeignSetupError(refusal(setups))
    commands = tuple(dict.fromkeys(command for setup in setups for command in setup.commands))
    stopped = tuple(dict.fromkeys(unit for setup in setups for unit in setup.units))
    after = copy.deepcopy(state)
    for name, key in OUR_UNITS.items():
        if name in stopped:
            after["units"][key].update({"enabled": False, "active": False, "stale": False})
    socket = after["units"]["socket"]
    socket["stale"] = socket["active"]
    # buildkitd exits 1 when it is stopped, which leaves its unit failed; and ours may have failed
    # while the other daemon held the socket: all of them start afresh.
    units = dict.fromkeys((layout.SOCKET_UNIT, layout.SERVICE_UNIT, *stopped))
    reset = sh.reset_failed(*units)
    return Takeover((*commands, reset), after, busy_sockets(state, stopped))
