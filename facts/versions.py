"""What is installed: nerdctl and BuildKit versions, the full archive, the files of one release."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase

from ..layout import (
    BINARY_VERSIONS,
    CONTAINERD_UNIT,
    DEFAULT_BIN_DIR,
    DEFAULT_FULL_PREFIX,
    FULL_README,
)
from .common import in_c_locale, parse_key_values
from .types import BuildkitVersionsDict, FullReadmeDict, NerdctlFullDict

NERDCTL_VERSION = re.compile(r"^nerdctl version v?(\S+)$")


BUILDKIT_VERSION = re.compile(r"^(buildkitd|buildctl) github\.com/moby/buildkit v?(\S+)(?: \S+)?$")


def parse_nerdctl_version(lines: list[str]) -> str | None:
    """``nerdctl version 2.3.5`` to ``"2.3.5"``; None for anything else."""
    for line in lines:
        match = NERDCTL_VERSION.match(line.strip())
        if match:
            return match.group(1)
    return None


def parse_buildkit_versions(lines: list[str]) -> BuildkitVersionsDict:
    """``buildkitd github.com/moby/buildkit v0.12.5 <rev>`` lines to ``{"buildkitd": "0.12.5", "buildctl": ...}``."""
    versions = {
        match.group(1): match.group(2) for match in (BUILDKIT_VERSION.match(line.strip()) for line in lines) if match
    }
    return {"buildkitd": versions.get("buildkitd"), "buildctl": versions.get("buildctl")}


# What proves an installed binary unchanged since its version was recorded (``stat -L`` format):
# inode, size, modification and change times to the nanosecond. A file replaced or edited by hand
# gets a new inode or change time, and its version is read afresh.
VERSION_KEY = "%i:%s:%y:%z"
# The binaries whose --version the version facts read, wherever an archive puts them.
VERSIONED_BINARIES = ("nerdctl", "buildkitd", "buildctl")
EXECUTED = "executed="


def version_command(*binaries: str, record: str = BINARY_VERSIONS) -> str:
    """``BINARY --version`` for each of ``binaries``, or the line ``record`` keeps for it while its ``VERSION_KEY``
    still matches.

    Executing the binaries was most of a converged host's own CPU (about 60 ms for the real
    buildkitd and buildctl); reading the record costs one ``stat`` for all of them. A binary
    that had to be executed is also named on an ``executed=PATH`` line, so the deploys can
    record it. A missing or unreadable record, or one of another file, means executing.
    """
    quoted = " ".join(shlex.quote(binary) for binary in binaries)
    quoted_record = shlex.quote(record)
    return f"""set -- {quoted}; nl='
'; keys=; if [ -f {quoted_record} ] && [ -r {quoted_record} ]; then
keys="$nl$(stat -L -c '%n|{VERSION_KEY}' "$@" 2>/dev/null)$nl"; fi
for binary do if [ -x "$binary" ]; then known=
case $keys in *"$nl$binary|"*) key=${{keys#*"$nl$binary|"}}; key=${{key%%"$nl"*}}
while IFS='|' read -r recorded_path recorded_key line; do
if [ "$recorded_path" = "$binary" ] && [ "$recorded_key" = "$key" ]; then known=$line; fi
done < {quoted_record};; esac
if [ -n "$known" ]; then printf '%s\\n' "$known"; else echo "{EXECUTED}$binary"; "$binary" --version 2>/dev/null || true; fi
fi; done"""


def parse_executed(lines: list[str]) -> tuple[str, ...]:
    """The binaries ``version_command`` had to execute (no record, or one whose key no longer matches)."""
    return tuple(line[len(EXECUTED) :] for line in lines if line.startswith(EXECUTED))


def buildkit_version_command(bin_dir: str) -> str:
    return version_command(f"{bin_dir}/buildkitd", f"{bin_dir}/buildctl")


class NerdctlVersion(FactBase[str | None]):
    """The installed nerdctl version, from ``nerdctl --version`` (needs no daemon).

    .. code:: python

        "2.3.5"  # or None when nerdctl is not installed
    """

    def command(self, bin_dir: str = DEFAULT_BIN_DIR) -> str:
        return in_c_locale(version_command(f"{bin_dir}/nerdctl"))

    def process(self, output: list[str]) -> str | None:
        return parse_nerdctl_version(output)

    @staticmethod
    def default() -> None:
        return None


class BuildkitVersion(FactBase[BuildkitVersionsDict]):
    """Versions of ``buildkitd`` and ``buildctl``, each None when absent.

    .. code:: python

        {"buildkitd": "0.12.5", "buildctl": "0.12.5"}
    """

    def command(self, bin_dir: str = DEFAULT_BIN_DIR) -> str:
        return in_c_locale(buildkit_version_command(bin_dir))

    def process(self, output: list[str]) -> BuildkitVersionsDict:
        return parse_buildkit_versions(output)

    @staticmethod
    def default() -> BuildkitVersionsDict:
        return {"buildkitd": None, "buildctl": None}


class ReleaseFiles(FactBase[list[str]]):
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

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]

    @staticmethod
    def default() -> list[str]:
        return []


def full_readme_command(full_prefix: str) -> str:
    """``full.COMPONENT=VERSION`` lines from the full archive's README.md, nothing when it is absent.

    The component list ends at the first ``## `` heading (upstream's license list follows).
    """
    readme = shlex.quote(f"{full_prefix}/{FULL_README}")
    pattern = "s/^- \\([^:]*\\): v\\{0,1\\}\\(.*\\)$/full.\\1=\\2/p"
    # No process at all where there is no full archive (most hosts, on every run).
    return f"if [ -f {readme} ]; then sed -n '/^## /q; {pattern}' {readme} 2>/dev/null || true; fi"


def parse_full_readme(lines: list[str]) -> FullReadmeDict:
    components = {
        line[len("full.") :].split("=", 1)[0]: line.split("=", 1)[1]
        for line in lines
        if line.startswith("full.") and "=" in line
    }
    return {"version": components.get("nerdctl"), "components": components}


class NerdctlFull(FactBase[NerdctlFullDict]):
    """The installed nerdctl-full release, its components (from its README.md), and containerd's state.

    .. code:: python

        {"version": "2.3.5", "components": {"nerdctl": "2.3.5", "containerd": "2.1.4", ...},
         "containerd_active": True}  # version None when no full archive is installed
    """

    def command(self, full_prefix: str = DEFAULT_FULL_PREFIX) -> str:
        return in_c_locale(
            f'{full_readme_command(full_prefix)}; echo "containerd=$(systemctl is-active {CONTAINERD_UNIT} 2>/dev/null)"'
        )

    def process(self, output: list[str]) -> NerdctlFullDict:
        return {
            **parse_full_readme(output),
            "containerd_active": parse_key_values(output).get("containerd") == "active",
        }

    @staticmethod
    def default() -> NerdctlFullDict:
        return {"version": None, "components": {}, "containerd_active": False}
