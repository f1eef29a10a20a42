"""How full a build host is (``BuildkitDiskUsage``): BuildKit's cache as its daemon counts it, and the file system.

The cache figures come from the daemon (``buildctl du --format``, a Go template over upstream's
``client.UsageInfo``: one ``du=SIZE INUSE SHARED TYPE`` line a record), summed as ``buildctl du``'s
own summary sums them (``cmd/buildctl/diskusage.go``). The file system's come from ``statfs``
(``stat -f``), as BuildKit's garbage collector reads them (``util/disk``).

The fact asks the daemon only while ``buildkit.service`` is active: asking an inactive one
through its socket would start it (socket activation), and a fact leaves the host as it found
it (and buildkitd opens its whole cache at start, minutes on big caches: moby/buildkit#4267).
The cache figures are then None, with the reason; the file system's are there. ``prune_buildkit``
does start it, and says what it freed.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from ..layout import BUILDKIT_ADDRESS, BUILDKIT_STATE, DEFAULT_BIN_DIR, SERVICE_UNIT
from .builds import ASK_SECONDS
from .common import in_c_locale
from .types import BuildkitCacheDict, BuildkitDiskUsageDict, FileSystemDict

# One line a cache record; --format exists from BuildKit 0.11 on.
DU_TEMPLATE = "{{range .}}du={{.Size}} {{.InUse}} {{.Shared}} {{.RecordType}}{{println}}{{end}}"
# Why the cache was not counted, by the line that says so (``{}``: the line's value).
NOT_ASKED = {
    "du.inactive=": "{} is not running: its cache was not counted, because asking would start it",
    "du.missing=": "no {}: BuildKit is not installed there",
    "du.unanswered=": "BuildKit did not say its disk usage: {}",
}


def disk_usage_command(
    bin_dir: str = DEFAULT_BIN_DIR,
    address: str = BUILDKIT_ADDRESS,
    unit: str = SERVICE_UNIT,
    root: str = BUILDKIT_STATE,
) -> str:
    """The file system of ``root`` (else of its nearest existing parent), and the cache while ``unit`` is active."""
    buildctl = shlex.quote(f"{bin_dir}/buildctl")
    return in_c_locale(
        f'dir={shlex.quote(root)}; while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done; '
        "printf 'fs.path=%s\\n' \"$dir\"; stat -f -c 'fs.blocks=%S %b %f %a' \"$dir\"; "
        f"if [ ! -x {buildctl} ]; then echo du.missing={buildctl}; "
        f"elif ! systemctl is-active --quiet {shlex.quote(unit)}; then echo du.inactive={shlex.quote(unit)}; "
        f"elif du=$(timeout {ASK_SECONDS} {buildctl} --addr {shlex.quote(address)} du "
        f"--format {shlex.quote(DU_TEMPLATE)} 2>&1); then echo du.answered; printf '%s\\n' \"$du\"; "
        "else printf '%s\\n' \"$du\" | grep -v '^$' | tail -n 1 | sed 's/^/du.unanswered=/'; fi"
    )


def parse_filesystem(lines: list[str]) -> FileSystemDict | None:
    """The ``fs.`` lines: ``statfs``'s block size and block counts to bytes.

    >>> parse_filesystem(["fs.path=/var/lib/buildkit", "fs.blocks=4096 1542756 1484652 1484652"])["size"]
    6319128576
    """
    values = dict(line[len("fs.") :].split("=", 1) for line in lines if line.startswith("fs.") and "=" in line)
    blocks = values.get("blocks", "").split()
    if "path" not in values or len(blocks) != 4 or not all(word.isdigit() for word in blocks):
        return None
    block, total, free, available = map(int, blocks)
    return {"path": values["path"], "size": block * total, "free": block * free, "available": block * available}


def parse_cache(lines: list[str]) -> BuildkitCacheDict:
    """The ``du=SIZE INUSE SHARED TYPE`` lines, summed as ``buildctl du``'s summary sums them.

    >>> parse_cache(["du=4096 false false source.local", "du=3129478 true true regular"])["reclaimable"]
    4096
    """
    cache: BuildkitCacheDict = {"total": 0, "reclaimable": 0, "shared": 0, "records": 0, "by_type": {}}
    for line in lines:
        if not line.startswith("du="):
            continue
        size_word, in_use, shared, *kind = line[len("du=") :].split(" ", 3)
        size = int(size_word)
        cache["records"] += 1
        if shared == "true":
            cache["shared"] += size
        if size > 0:
            cache["total"] += size
            cache["reclaimable"] += size if in_use == "false" else 0
            record_type = (kind or [""])[0] or "unknown"  # a daemon before 0.11 names no type
            cache["by_type"][record_type] = cache["by_type"].get(record_type, 0) + size
    return cache


def parse_disk_usage(lines: list[str]) -> BuildkitDiskUsageDict:
    """Lines of ``disk_usage_command`` to the fact's payload (see ``BuildkitDiskUsage``).

    >>> parse_disk_usage(["du.inactive=buildkit.service"])["reason"]
    'buildkit.service is not running: its cache was not counted, because asking would start it'
    """
    usage: BuildkitDiskUsageDict = {"filesystem": parse_filesystem(lines), "cache": None, "reason": None}
    for line in lines:
        key, _, value = line.partition("=")
        if f"{key}=" in NOT_ASKED:
            usage["reason"] = NOT_ASKED[f"{key}="].format(value)
        elif line == "du.answered":
            usage["cache"] = parse_cache(lines)
    return usage


class BuildkitDiskUsage(FactBase[BuildkitDiskUsageDict]):
    """BuildKit's cache in bytes (total, reclaimable, shared with containerd's images, by record type) and
    the file system under BuildKit's root (``root``: ``root`` of ``buildkitd_config``, else ``/var/lib/buildkit``).

    The cache is counted only while ``buildkit.service`` runs: an inactive one is not started
    to ask (``cache`` None, ``reason`` says why). Not part of the deploys' one ``BuildHostState``.

    .. code:: python

        {"filesystem": {"path": "/var/lib/buildkit", "size": 6319128576, "free": 6081134592,
                        "available": 6081134592},
         "cache": {"total": 5173656, "reclaimable": 5173656, "shared": 3137944, "records": 6,
                   "by_type": {"source.local": 2035712, "regular": 3137944}},
         "reason": None}
    """

    def command(
        self,
        bin_dir: str = DEFAULT_BIN_DIR,
        address: str = BUILDKIT_ADDRESS,
        unit: str = SERVICE_UNIT,
        root: str = BUILDKIT_STATE,
    ) -> str:
        return disk_usage_command(bin_dir, address, unit, root)

    def process(self, output: list[str]) -> BuildkitDiskUsageDict:
        return parse_disk_usage(output)

    @staticmethod
    def default() -> BuildkitDiskUsageDict:
        return {"filesystem": None, "cache": None, "reason": "the host did not answer"}
