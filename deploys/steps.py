"""A deploy as a plan of steps: the planners return ``Step`` values (pure), one loop carries them out.

A step is one operation with a fixed name in a fixed place of its deploy's sequence. Its
``commands`` are what it runs; none means nothing to do on this host, and ``unneeded`` says
why. Its ``kind`` chooses the operation that runs it:

- ``run``: ``run_commands`` (under the host's lock with ``lock_wait``)
- ``directory``: ``root_directory`` (``options``: ``path``, ``mode``; needed when it has a command)
- ``write``: ``write_file`` (``options``: ``path``, ``content``, ``mode``; ``None`` content: nothing to write)
- ``release``: ``release_files`` (``options``: ``downloads``, ``dest``, ``cache_dir``, ``retired``)
- ``remove_release``: ``remove_release_files`` (``options``: ``release``, ``dest``, ``installed_files``)
- ``check``: ``buildkit_answers`` (its one command is the check's script)
- ``user_file``: ``rootless.user_file`` (``options``: ``user``, ``uid``, ``home``, ``relative``, ``content``)
- ``ca``: ``fleet_ca``, on the controller (``options``: ``ca_dir``, ``authority``: the CA to write, None: nothing to write)
- ``packages``: apt's packages (``options``: ``packages``), a no-op reading nothing when none is missing
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .operations import fleet_ca, release_files, remove_release_files, root_directory, run_commands, write_file
from .verify import buildkit_answers


@dataclass(frozen=True)
class Step:
    name: str
    commands: tuple[str, ...] = ()
    unneeded: str = ""
    kind: str = "run"
    lock_wait: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def run(name: str, commands: Sequence[str], unneeded: str, lock_wait: int | None = None) -> Step:
    """A step of plain commands, decided from the deploy's one fact."""
    return Step(name, tuple(commands), unneeded, lock_wait=lock_wait)


def check(name: str, script: str, skip_reason: str | None) -> Step:
    """The check that BuildKit answers (``verify``): its script, unless there is a reason to skip it."""
    return Step(name, () if skip_reason else (script,), skip_reason or "", kind="check")


def held_lock_wait(step: Step) -> int:
    """The lock wait of a step whose operation always holds the host's lock (an install, a removal, a user's file)."""
    if step.lock_wait is None:
        raise ValueError(f"the step {step.name!r} holds the host's lock and needs a lock_wait")
    return step.lock_wait


def _run(step: Step) -> None:
    run_commands(name=step.name, commands=list(step.commands), unneeded=step.unneeded, lock_wait=step.lock_wait)


def _directory(step: Step) -> None:
    root_directory(name=step.name, path=step.options["path"], needed=bool(step.commands), mode=step.options["mode"])


def _write(step: Step) -> None:
    write_file(name=step.name, path=step.options["path"], content=step.options["content"], mode=step.options["mode"])


def _release(step: Step) -> None:
    release_files(
        name=step.name,
        downloads=list(step.options["downloads"]),
        dest=step.options["dest"],
        cache_dir=step.options["cache_dir"],
        retired=list(step.options["retired"]),
        installed=step.unneeded,
        lock_wait=held_lock_wait(step),
    )


def _remove_release(step: Step) -> None:
    remove_release_files(name=step.name, lock_wait=held_lock_wait(step), **step.options)


def _check(step: Step) -> None:
    buildkit_answers(name=step.name, script="".join(step.commands), skip_reason=step.unneeded or None)


def _ca(step: Step) -> None:
    fleet_ca(name=step.name, ca_dir=step.options["ca_dir"], authority=step.options["authority"], unneeded=step.unneeded)


# The operation that carries out each kind of step of the build-host deploys.
OPERATIONS: dict[str, Callable[[Step], None]] = {
    "run": _run,
    "directory": _directory,
    "write": _write,
    "release": _release,
    "remove_release": _remove_release,
    "check": _check,
    "ca": _ca,
}


def carry_out(steps: Iterable[Step], operations: Mapping[str, Callable[[Step], None]] = OPERATIONS) -> None:
    """Call the operation of each step, in order (``operations``: by kind)."""
    for step in steps:
        operations[step.kind](step)
