"""Helpers every fact module shares: file lists of releases, shell quoting, the C locale, ``key=value`` and ``stat`` output."""

from __future__ import annotations

import re
import shlex
import stat

from ..layout import (
    STATE_DIR,
)
from .types import PlatformDict, SocketFileDict

SHA256_LINE = re.compile(r"^[0-9a-f]{64}$")


def manifest_path(release_name: str, dest: str) -> str:
    """Where the absolute paths of the files a release installed under ``dest`` are kept.

    One manifest per release and destination: the same release installed in two
    places is two installs, each converging on its own.
    """
    return f"{STATE_DIR}/{release_name}@{dest.replace('/', '_')}.files"


def manifest_glob(release_name: str) -> str:
    """Every manifest of a release, wherever it was installed (a pattern whose only wildcard is ``*``)."""
    return f"{STATE_DIR}/{release_name}@*.files"


def shell_glob(pattern: str) -> str:
    """``pattern`` for the shell: every character quoted but ``*``, which still expands.

    >>> shell_glob("/var/lib/my tools/nerdctl-full@*.files")
    "'/var/lib/my tools/nerdctl-full@'*.files"
    """
    return "*".join(shlex.quote(part) if part else "" for part in pattern.split("*"))


def in_c_locale(command: str) -> str:
    """``command`` with every program in it speaking the C locale, whatever the host's ``LANG``.

    Facts parse what programs print: ``stat``, ``systemctl`` and others translate words
    and day names (``reguläre Datei``, ``So``) on a German host. ``LC_ALL`` wins over
    ``LANG`` and every ``LC_*``, and gettext ignores ``LANGUAGE`` in the C locale.
    """
    return f"export LC_ALL=C; {command}"


def parse_key_values(lines: list[str]) -> dict[str, str]:
    """``Key=value`` lines (``systemctl show`` style) to a dict."""
    return dict(line.split("=", 1) for line in lines if "=" in line)


# stat's %F names the file type in the host's language; %f, the raw mode in hex, is the same everywhere.
STAT_FIELDS = "%f|%a|%U|%G"


FILE_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFSOCK: "socket", stat.S_IFLNK: "symlink"}


def file_kind(raw_mode: str) -> str:
    """stat's ``%f`` (the raw mode in hex) to ``"file"``, ``"dir"``, ``"socket"``, ``"symlink"`` or ``"other"``.

    >>> file_kind("81a4")
    'file'
    """
    return FILE_KINDS.get(stat.S_IFMT(int(raw_mode, 16)), "other")


def stat_command(path: str) -> str:
    """Print ``stat=<raw mode>|<mode>|<user>|<group>`` for ``path``, nothing when it is absent."""
    return f"stat -c 'stat={STAT_FIELDS}' {path} 2>/dev/null || true"


def parse_stat(value: str | None) -> SocketFileDict:
    if not value:
        return {"exists": False, "is_socket": False, "mode": None, "user": None, "group": None}
    raw_mode, mode, user, group = value.split("|")
    return {"exists": True, "is_socket": file_kind(raw_mode) == "socket", "mode": mode, "user": user, "group": group}


PLATFORM_COMMAND = 'echo "machine=$(uname -m)"; if [ -d /run/systemd/system ]; then echo systemd=yes; fi'


def platform_from(values: dict[str, str]) -> PlatformDict:
    """The ``PLATFORM_COMMAND`` keys of parsed ``key=value`` output."""
    return {"machine": values.get("machine", ""), "systemd": values.get("systemd") == "yes"}
