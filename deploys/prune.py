"""``prune_buildkit``: BuildKit's cache pruned through its daemon, which is left as it was found.

Deciding apart from doing: ``prune_options`` checks the values before anything runs (pure), and
``prune_step`` turns them into the installed buildctl's options (pure): ``keep_storage_min`` and
``free_storage`` exist from BuildKit 0.17 on (``--keep-storage-min``, ``--free-storage``;
upstream's ``cmd/buildctl/prune.go``), and the count of what was freed from 0.11 on (``--format``).
``prune.sh`` runs it under the host's lock: a daemon the socket starts for the prune is stopped
again, unless a build came meanwhile (``stop_if_idle``, as the check after a change does).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from pyinfra.api import deploy

from .. import layout
from ..facts import BuildkitVersion
from ..facts.types import BuildkitVersionsDict
from .build_host import fail, host_settings, log_warnings, read_state
from .disk import disk_warnings
from .drain import IDLE_FUNCTIONS
from .operations import fixed_steps, step_operation
from .settings import SettingError, Settings, parse_flag
from .steps import OPERATIONS, Step, carry_out
from .verify import RelayingCommand, locked_check

PRUNE_SCRIPT = Path(__file__).with_name("prune.sh")
STEP_NAME = "Prune BuildKit's cache"
# As buildkitd.toml reads its GC sizes (docker's go-units RAMInBytes): 1024-based, with or without B or iB.
SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)i?b?$", re.IGNORECASE)
DURATION = re.compile(r"^(?:\d+[dhms])+$")
DURATION_PART = re.compile(r"(\d+)([dhms])")
SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# The size options in buildctl's order, each with its flag and the first BuildKit that has it.
SIZE_FLAGS = {
    "keep_storage": ("--keep-storage", "0.0.0"),
    "keep_storage_min": ("--keep-storage-min", "0.17.0"),
    "free_storage": ("--free-storage", "0.17.0"),
}
COUNTED_SINCE = "0.11.0"  # buildctl prune --format
# Before 0.21, free_storage alone pruned as if no size were given once enough was free (moby/buildkit ac123b49).
FREE_ALONE_SINCE = "0.21.0"
FREED = "freed "


class PruneError(ValueError):
    """A prune option that cannot work here; the message names the option and the value."""


@dataclass(frozen=True)
class PruneOptions:
    """Checked options: seconds and bytes, 0 where unset (no limit)."""

    all: bool = False
    keep_duration: int = 0
    keep_storage: int = 0
    keep_storage_min: int = 0
    free_storage: int = 0


def parse_size(value: Any, key: str) -> int:
    """Bytes from a number or a size such as ``512MB`` or ``10GiB`` (1024-based, as in ``buildkitd.toml``).

    >>> parse_size("1.5GB", "keep_storage")
    1610612736
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    text = str(value).strip()
    if text.endswith("%"):
        raise PruneError(f"{key}={value!r}: a percentage of the disk is for buildkitd.toml's GC keys; give a size")
    match = SIZE.match(text) if isinstance(value, str) else None
    if not match:
        raise PruneError(f"{key}={value!r} is not a size (bytes as a number, or e.g. 512MB, 10GB: 1024-based)")
    return int(float(match.group(1)) * 1024 ** " kmgtp".index(match.group(2).lower() or " "))


def parse_duration(value: Any, key: str) -> int:
    """Seconds from a number of seconds or a duration such as ``48h``, ``7d`` or ``1h30m``.

    >>> parse_duration("1h30m", "keep_duration")
    5400
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip()
    if isinstance(value, str) and text.isdigit():
        return int(text)
    if not isinstance(value, str) or not DURATION.match(text):
        raise PruneError(f"{key}={value!r} is not a duration (e.g. 48h, 7d, 1h30m, or seconds as a number)")
    return sum(int(count) * SECONDS[unit] for count, unit in DURATION_PART.findall(text))


def prune_options(all: Any = False, keep_duration: Any = None, **sizes: Any) -> PruneOptions:
    """Checked options (``keep_storage``, ``keep_storage_min``, ``free_storage`` among ``sizes``); else a PruneError.

    >>> prune_options(all="true", keep_duration="48h", keep_storage="10GB").keep_storage
    10737418240
    """
    unknown = set(sizes) - set(SIZE_FLAGS)
    if unknown:
        raise PruneError(
            f"unknown prune option {sorted(unknown)[0]!r} (known: all, keep_duration, {', '.join(SIZE_FLAGS)})"
        )
    try:
        everything = parse_flag(all, "all")
    except SettingError as error:
        raise PruneError(str(error)) from error
    duration = 0 if keep_duration is None else parse_duration(keep_duration, "keep_duration")
    checked = {key: parse_size(value, key) for key, value in sizes.items() if value is not None}
    return PruneOptions(everything, duration, **checked)


def installed_version(versions: BuildkitVersionsDict) -> Version | None:
    """The older of the installed ``buildctl`` and ``buildkitd`` (the client parses the options, the daemon
    applies them); None when either is missing or says no release version."""
    try:
        found = [Version(versions[name] or "") for name in ("buildctl", "buildkitd")]
    except InvalidVersion:
        return None
    return min(found)


def prune_arguments(options: PruneOptions, version: Version) -> list[str]:
    """``buildctl prune``'s options for ``options``; a PruneError for one the installed BuildKit lacks."""
    arguments = ["--all"] if options.all else []
    if options.keep_duration:
        arguments += ["--keep-duration", f"{options.keep_duration}s"]
    for key, (flag, since) in SIZE_FLAGS.items():
        size = getattr(options, key)
        if not size:
            continue
        if version < Version(since):
            raise PruneError(f"{key} needs BuildKit {since} or newer ({flag}); this host has {version}: leave it out")
        arguments += [flag, f"{size // 10**6}.{size % 10**6:06d}"]  # buildctl takes MB (10^6 bytes)
    if (
        options.free_storage
        and not (options.keep_storage or options.keep_storage_min)
        and version < Version(FREE_ALONE_SINCE)
    ):
        raise PruneError(
            f"free_storage alone prunes everything once enough is free on BuildKit before {FREE_ALONE_SINCE} "
            f"(this host has {version}): give keep_storage or keep_storage_min with it"
        )
    if version >= Version(COUNTED_SINCE):
        arguments += ["--format", "{{.Size}}"]
    return arguments


def prune_body(settings: Settings, arguments: list[str]) -> str:
    """``prune.sh`` with this host's values and ``arguments`` (``prune_arguments``)."""
    values = {
        "buildctl": f"{settings.bin_dir}/buildctl",
        "address": layout.BUILDKIT_ADDRESS,
        "service_unit": layout.SERVICE_UNIT,
        "socket_unit": layout.SOCKET_UNIT,
        "counted": "yes" if "--format" in arguments else "no",
    }
    assignments = "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
    return assignments + f"set -- {shlex.join(arguments)}\n" + IDLE_FUNCTIONS + PRUNE_SCRIPT.read_text()


def prune_step(settings: Settings, options: PruneOptions, versions: BuildkitVersionsDict) -> Step:
    """The one step of ``prune_buildkit`` on this host; a PruneError for an option its BuildKit lacks."""
    version = installed_version(versions)
    if version is None:
        return Step(STEP_NAME, (), f"BuildKit is not installed in {settings.bin_dir}", kind="prune")
    body = prune_body(settings, prune_arguments(options, version))
    # Under the host's lock: an install's restart or check cannot land in the middle of the prune.
    return Step(STEP_NAME, (locked_check(settings.host_lock_wait, body),), kind="prune")


class ReportCommand(RelayingCommand):
    """The prune, whose ``freed ...`` line pyinfra shows, as it shows what an operation changed."""

    PREFIX = FREED


@step_operation(lambda script, unneeded: unneeded or None)
def prune_cache(script: str, unneeded: str = "") -> Generator[ReportCommand, None, None]:
    """Run ``script`` (``prune_step``), unless ``unneeded`` says why not (then nothing).

    .. code:: python

        prune_cache(script=prune_step(settings, prune_options(all=True), versions).commands[0])
    """
    yield ReportCommand(script.strip())


def _prune(step: Step) -> None:
    prune_cache(name=step.name, script="".join(step.commands), unneeded=step.unneeded)


@deploy("Prune BuildKit's cache")
def prune_buildkit(
    all: Any = False,
    keep_duration: Any = None,
    keep_storage: Any = None,
    keep_storage_min: Any = None,
    free_storage: Any = None,
    **settings: Any,
) -> None:
    """BuildKit's cache pruned through its daemon; a daemon started for it is stopped again (never mid-build).

    ``all``: internal and frontend records too; ``keep_duration``: keep what was used this recently
    (``48h``); ``keep_storage``: prune down to this much (``10GB``); from BuildKit 0.17 also
    ``keep_storage_min`` (never prune below this) and ``free_storage`` (prune until this much is free).

    .. code:: python

        prune_buildkit(all=True, keep_duration="48h", keep_storage="10GB")
    """
    resolved = host_settings(settings)
    try:
        options = prune_options(
            all, keep_duration, keep_storage=keep_storage, keep_storage_min=keep_storage_min, free_storage=free_storage
        )
        versions: BuildkitVersionsDict | None = read_state(BuildkitVersion, bin_dir=resolved.bin_dir)
        if versions is None:
            return
        log_warnings(disk_warnings(resolved, versions["buildkitd"]))
        step = prune_step(resolved, options, versions)
    except PruneError as error:
        raise fail(str(error)) from error
    with fixed_steps():
        carry_out([step], {**OPERATIONS, "prune": _prune})
