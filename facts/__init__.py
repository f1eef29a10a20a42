"""Facts about a build host: installed versions, and socket and unit state.

Each fact returns a documented shape and a clear empty value when nothing is
installed, never an error. Usable from the CLI, e.g.
``pyinfra INVENTORY fact pyinfra_nerdctl.facts.NerdctlVersion bin_dir=/opt/bin``.

The facts live in modules by domain (``versions``, ``units``, ``state``, ``rootless``;
``common`` holds what they share) and are all importable from here, under the names
docs/facts.md documents.
"""

from __future__ import annotations

from pyinfra.api import FactBase

from ..layout import UNITS
from .builds import BuildkitBuilds, parse_builds
from .common import file_kind, manifest_glob, manifest_path, shell_glob
from .disk import BuildkitDiskUsage, parse_disk_usage
from .rootless import RootlessState
from .state import BuildHostPlatform, BuildHostState
from .units import (
    BuildkitSocket,
    BuildkitUnitFreshness,
    BuildkitWorkers,
    ContainerdSocket,
    parse_buildkit_workers,
    parse_socket_unit,
    parse_systemd_timestamp,
    parse_unit_freshness,
    started_before,
)
from .versions import (
    BuildkitVersion,
    NerdctlFull,
    NerdctlVersion,
    ReleaseFiles,
    parse_buildkit_versions,
    parse_full_readme,
    parse_nerdctl_version,
)

__all__ = [
    "BuildHostPlatform",
    "BuildHostState",
    "BuildkitBuilds",
    "BuildkitDiskUsage",
    "BuildkitSocket",
    "BuildkitUnitFreshness",
    "BuildkitWorkers",
    "BuildkitVersion",
    "ContainerdSocket",
    "NerdctlFull",
    "NerdctlVersion",
    "ReleaseFiles",
    "RootlessState",
    "UNITS",
    "file_kind",
    "manifest_glob",
    "manifest_path",
    "parse_buildkit_versions",
    "parse_builds",
    "parse_disk_usage",
    "parse_buildkit_workers",
    "parse_full_readme",
    "parse_nerdctl_version",
    "parse_socket_unit",
    "parse_systemd_timestamp",
    "parse_unit_freshness",
    "shell_glob",
    "started_before",
]


def _public_names() -> None:
    """Every fact keeps the name ``pyinfra_nerdctl.facts.NAME`` (CLI output, JSON keys), whichever module holds it."""
    for value in list(globals().values()):
        if isinstance(value, type) and issubclass(value, FactBase) and value.__module__.startswith(f"{__name__}."):
            value.name = f"{__name__}.{value.__name__}"


_public_names()
