"""Proof that a build host builds: a preflight warning, and a bounded check after a change BuildKit depends on.

After a run changed BuildKit's binaries, ``buildkitd.toml`` or units, ``buildkit_answers``
activates BuildKit through its socket and asks for its workers (``verify.sh``): the run
fails for the host unless the containerd worker answers in the configured namespace. A
service that was not running before is stopped again, so BuildKit stays on-demand.
Copies of the files of the last setup that answered are kept under ``GOOD_DIR``; when
the daemon refuses new ones (it fails to start or exits on them, or answers without that
worker), those come back, BuildKit starts again on them, and the run
fails naming what was refused. A daemon still stopping (a graceful stop finishes its builds)
or starting (a big cache) is no refusal: it is waited for, up to ``buildkit_verify_timeout``.
A converged host gets no command at all. The same script checks a rootless user's BuildKit,
run as the user on the user's units (``USER_SYSTEMD``, ``rootless_plan.user_check_body``).
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import logger
from pyinfra.api import StringCommand

from .. import layout
from ..facts.types import BuildHostStateDict
from .changes import Changes, has_buildkit
from .commands import lock_commands
from .drain import IDLE_FUNCTIONS
from .operations import step_operation
from .releases import BUILDKIT, NERDCTL_FULL, Release
from .settings import Settings

if TYPE_CHECKING:
    from pyinfra.api import Host, State
    from pyinfra.api.arguments import ConnectorArguments
    from pyinfra.connectors.util import CommandOutput

GOOD_DIR = layout.BUILDKIT_GOOD_DIR
# For a user's BuildKit: every systemctl and journalctl in verify.sh talks to the user's own manager.
USER_SYSTEMD = 'systemctl() { command systemctl --user "$@"; }\njournalctl() { command journalctl --user "$@"; }\n'
VERIFY_SCRIPT = Path(__file__).with_name("verify.sh")
BUILDKIT_FILES = (layout.BUILDKIT_CONFIG, layout.SERVICE_PATH, layout.SOCKET_PATH)


def buildkit_watched(settings: Settings) -> tuple[str, ...]:
    """What BuildKit runs on: its config, its units, and the daemon's binary."""
    return (*BUILDKIT_FILES, f"{settings.bin_dir}/buildkitd")


def buildkit_inputs_changed(changes: Changes) -> bool:
    """Whether this run changes something BuildKit depends on, or (re)starts its units."""
    return (
        bool(set(changes.outdated) & {BUILDKIT, NERDCTL_FULL})
        or any(file.path in BUILDKIT_FILES for file in changes.files)
        or changes.start_socket
        or changes.restart_socket
        or changes.restart_service
        or changes.start_service
    )


def containerd_missing_warning(settings: Settings, state: BuildHostStateDict) -> str | None:
    """The preflight warning for a minimal-flavor host whose containerd socket is not there (from ``BuildHostState``)."""
    if settings.full or settings.containerd_socket in state["paths"]:
        return None
    return (
        f"containerd socket {settings.containerd_socket} does not exist (containerd_address="
        f"{settings.containerd_address}): containerd or k3s is not installed or not running, "
        "so BuildKit cannot build until it is"
    )


def check_body(values: Mapping[str, str], prelude: str = "") -> str:
    """``verify.sh`` with ``values`` assigned first, then ``prelude`` (shell that adapts it, e.g. ``USER_SYSTEMD``)."""
    assignments = "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
    return assignments + prelude + IDLE_FUNCTIONS + VERIFY_SCRIPT.read_text()


def check_values(
    settings: Settings,
    *,
    buildkit_socket: str,
    containerd_socket: str,
    namespace: str,
    good_dir: str,
    watched: Sequence[str],
    service_was_running: bool,
) -> dict[str, str]:
    """What ``verify.sh`` reads; an empty ``containerd_socket``: no containerd to wait for (it is BuildKit's own unit).

    The check waits up to ``buildkit_verify_timeout`` for a daemon that is still stopping or starting;
    a service that was not running is stopped again after the check.
    """
    return {
        "stop_after": "no" if service_was_running else "yes",
        "bin_dir": settings.bin_dir,
        "buildkit_socket": buildkit_socket,
        "containerd_socket": containerd_socket,
        "namespace": namespace,
        "limit": str(settings.buildkit_verify_timeout),
        "good_dir": good_dir,
        "watched": " ".join(watched),
        "service_unit": layout.SERVICE_UNIT,
        "socket_unit": layout.SOCKET_UNIT,
        "temp_suffix": f"{layout.TEMP_PREFIX}.tmp",
    }


def locked_check(lock_wait: int, body: str) -> str:
    """``body`` after the host's lock: another run's install or removal cannot land in the middle of a check or a restore."""
    return "\n".join(lock_commands(lock_wait)) + "\n" + body


def verify_script(settings: Settings, service_was_running: bool) -> str:
    """``verify.sh`` with this host's values, for the root ``buildkit.service``."""
    values = check_values(
        settings,
        buildkit_socket=layout.BUILDKIT_SOCKET,
        containerd_socket=settings.containerd_socket,
        namespace=settings.containerd_namespace,
        good_dir=GOOD_DIR,
        watched=buildkit_watched(settings),
        service_was_running=service_was_running,
    )
    return locked_check(settings.host_lock_wait, check_body(values))


WARNING = "warning: "


class RelayingCommand(StringCommand):
    """A command whose output lines starting with ``PREFIX`` pyinfra shows, even when it succeeds."""

    PREFIX = ""

    def relay(self, host: Host, line: str) -> None:
        logger.info(f"{host.name}: {line}")

    def execute(self, state: State, host: Host, connector_arguments: ConnectorArguments) -> tuple[bool, CommandOutput]:
        status, output = super().execute(state, host, connector_arguments)
        for line in output.stdout_lines:
            if line.startswith(self.PREFIX):
                self.relay(host, line)
        return status, output


class CheckCommand(RelayingCommand):
    """The check, whose ``warning:`` lines pyinfra shows as warnings."""

    PREFIX = WARNING

    def relay(self, host: Host, line: str) -> None:
        logger.warning(f"{host.name}: {line[len(WARNING) :]}")


@step_operation(lambda script, skip_reason: skip_reason)
def buildkit_answers(script: str, skip_reason: str | None = None) -> Generator[CheckCommand, None, None]:
    """Run ``script`` (``verify_script``), unless there is a ``skip_reason`` (then nothing, saying why).

    + script: the check, rendered for this host
    + skip_reason: why this host needs no check (nothing BuildKit depends on changed, ...)

    .. code:: python

        buildkit_answers(script=verify_script(settings, service_was_running=False))
    """
    yield CheckCommand(script.strip())


def check_paths(settings: Settings, possible: tuple[Release, ...]) -> tuple[str, ...]:
    """What ``BuildHostState`` must also report for the check: containerd's socket (minimal flavor), the copies."""
    if not has_buildkit(possible):
        return ()
    return (GOOD_DIR,) if settings.full else (settings.containerd_socket, GOOD_DIR)


def check_skip_reason(settings: Settings, changes: Changes, containerd_missing: bool) -> str | None:
    """Why the check does not run on this host; None when it does."""
    if not buildkit_inputs_changed(changes):
        return "nothing BuildKit depends on changed"
    if not settings.buildkit_verify:
        return "buildkit_verify is off"
    if containerd_missing:
        return "BuildKit was not checked: containerd's socket is missing"
    return None
