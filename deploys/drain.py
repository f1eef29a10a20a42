"""Wait for the builds in flight before a restart or stop (``buildkit_drain_timeout``): one home for every daemon.

A deploy that restarts or stops a running BuildKit first runs ``drain_commands``: they
return at once when the unit is not active (no daemon is started to ask), wait while
``buildctl debug histories`` lists a ``STARTED`` build, and fail the host with one line
when builds still run at the timeout, before anything was stopped. A daemon that a run started
only to ask it something (the check after a change, a prune) is stopped again with ``stop_if_idle``
(``idle.sh``, in ``IDLE_FUNCTIONS``), unless a build came meanwhile.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..facts.builds import RUNNING_BUILDS_FUNCTION

DRAIN_FUNCTIONS = RUNNING_BUILDS_FUNCTION + Path(__file__).with_name("drain.sh").read_text()
IDLE_FUNCTIONS = RUNNING_BUILDS_FUNCTION + Path(__file__).with_name("idle.sh").read_text()


def drain_commands(
    buildctl: str, address: str, seconds: int, unit: str | None = None, systemctl: str = "systemctl"
) -> list[str]:
    """The command that waits, at most ``seconds``, until BuildKit at ``address`` runs no build; none for 0.

    + buildctl: the client to ask with (path on the host)
    + address: the daemon's socket, ``unix:///run/buildkit/buildkitd.sock`` (a plain path is taken as unix)
    + seconds: ``buildkit_drain_timeout``; 0: do not wait (no command)
    + unit: ask only while this unit is active; None: a daemon no unit runs (known to be running)
    + systemctl: the command for the unit's scope (``systemctl --user -M alice@`` for a rootless user)
    """
    if seconds == 0:
        return []
    if address.startswith("/"):
        address = f"unix://{address}"
    values = {"buildctl": buildctl, "address": address, "unit": unit or "", "drain_timeout": str(seconds)}
    values = {**values, "systemctl": systemctl}  # words the shell splits: `systemctl --user -M alice@`
    assignments = "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
    return [assignments + DRAIN_FUNCTIONS + "wait_for_builds\n"]
