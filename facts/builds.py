"""The builds BuildKit runs right now (``BuildkitBuilds``), and the shell function that lists them.

``buildctl debug histories`` lists BuildKit's build records, those in flight first with the
type ``STARTED`` (upstream's ``cmd/buildctl/debug/histories.go``: a tab-separated table
``TYPE REF CREATED COMPLETED GENERATION PINNED``, times in RFC 3339). The same function serves
this fact and the drain that every restart or stop waits on (``deploys/drain.sh``).
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from ..layout import BUILDKIT_ADDRESS, DEFAULT_BIN_DIR, SERVICE_UNIT
from .common import in_c_locale
from .types import BuildDict

ASK_SECONDS = 20
UNANSWERED = "builds.unanswered="

# `running_builds BUILDCTL ADDRESS`: one `REF CREATED` line per build in flight, oldest last as
# BuildKit lists them; fails, with buildctl's error on stderr, when the daemon does not answer.
RUNNING_BUILDS_FUNCTION = f"""running_builds() {{
  histories=$(timeout {ASK_SECONDS} "$1" --addr "$2" debug histories) || return 1
  printf '%s\\n' "$histories" | awk '$1 == "STARTED" {{ print $2, $3 }}'
}}
"""


def builds_command(
    bin_dir: str = DEFAULT_BIN_DIR,
    address: str = BUILDKIT_ADDRESS,
    unit: str = SERVICE_UNIT,
    systemctl: str = "systemctl",
) -> str:
    """``build=REF CREATED`` per build in flight, asked only while ``unit`` is active (``systemctl``: its scope).

    An inactive unit runs no build, and asking its socket would start the socket-activated daemon.
    """
    buildctl = shlex.quote(f"{bin_dir}/buildctl")
    return in_c_locale(
        RUNNING_BUILDS_FUNCTION + f"if {systemctl} is-active --quiet {shlex.quote(unit)}; then "
        f"if found=$(running_builds {buildctl} {shlex.quote(address)} 2>&1); then "
        "printf '%s\\n' \"$found\" | sed '/^$/d; s/^/build=/'; "
        f"else printf '%s\\n' \"$found\" | head -n 1 | sed 's/^/{UNANSWERED}/'; fi; fi"
    )


def parse_builds(lines: list[str]) -> list[BuildDict] | None:
    """Lines of ``builds_command`` to ``[{"ref", "started"}]``; None when BuildKit runs but did not answer.

    >>> parse_builds(["build=k3v1 2026-11-30T19:02:03Z"])
    [{'ref': 'k3v1', 'started': '2026-11-30T19:02:03Z'}]
    """
    if any(line.startswith(UNANSWERED) for line in lines):
        return None
    builds: list[BuildDict] = []
    for line in lines:
        if line.startswith("build="):
            ref, _, started = line[len("build=") :].partition(" ")
            builds.append({"ref": ref, "started": started or None})
    return builds


class BuildkitBuilds(FactBase[list[BuildDict] | None]):
    """The builds ``buildkit.service`` runs now, each with its ref and when it started (RFC 3339).

    Empty when the service is not running (the socket-activated daemon is not started to ask);
    None when it runs but did not answer within 20 s.

    .. code:: python

        [{"ref": "qz1k0dxm6c7t2m2vw5ofm7l0a", "started": "2026-11-30T19:02:03Z"}]
    """

    def command(
        self,
        bin_dir: str = DEFAULT_BIN_DIR,
        address: str = BUILDKIT_ADDRESS,
        unit: str = SERVICE_UNIT,
        systemctl: str = "systemctl",
    ) -> str:
        return builds_command(bin_dir, address, unit, systemctl)

    def process(self, output: list[str]) -> list[BuildDict] | None:
        return parse_builds(output)

    @staticmethod
    def default() -> list[BuildDict]:
        return []
