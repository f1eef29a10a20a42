"""What an upstream release is: one data model for nerdctl, nerdctl-full and BuildKit.

Everything here is pure (no host): asset names, URLs, architecture mapping,
version parsing and checksum resolution, so it is unit-tested without a host.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, wraps
from pathlib import Path
from typing import Any, TypeVar

from packaging.version import InvalidVersion, Version

from .trust import SHA256_PATTERN, good_signer, provenance_sha256

T = TypeVar("T")
CHECKSUM_TABLE = Path(__file__).with_name("release-checksums.json")
VERSION_PATTERN = re.compile(r"^v?(\d+\.\d+\.\d+(?:-(?:alpha|beta|rc)\.?\d+)?)$")

# `uname -m` to the architecture names upstream uses in asset names.
MACHINE_TO_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm-v7",
    "ppc64le": "ppc64le",
    "riscv64": "riscv64",
    "s390x": "s390x",
    "loongarch64": "loong64",
}


class ReleaseError(ValueError):
    """A release that cannot be installed as asked (bad version, arch or checksum)."""


@dataclass(frozen=True)
class Release:
    """One kind of upstream release archive and what to take from it.

    ``member_dir`` is the folder inside the archive whose files (and subfolders)
    are installed; ``version_binaries`` are the files a version fact reads, moved
    into place last so that an interrupted install still reports the old version.
    """

    name: str
    label: str
    repo: str
    asset_template: str
    arches: tuple[str, ...]
    member_dir: str
    version_binaries: tuple[str, ...]
    sums_asset: str | None = None  # one sha256sum file for all the release's archives (nerdctl)
    provenance_template: str | None = None  # an in-toto provenance statement beside each archive (BuildKit)
    arch_since: tuple[tuple[str, str], ...] = ()

    def asset(self, version: str, arch: str) -> str:
        """The archive's file name, e.g. ``nerdctl-2.3.5-linux-amd64.tar.gz``."""
        return self.asset_template.format(version=version, arch=arch)

    def url(self, github_url: str, version: str, asset: str) -> str:
        """Where ``asset`` of ``version`` lives under ``github_url`` (github.com's paths)."""
        return f"{github_url.rstrip('/')}/{self.repo}/releases/download/v{version}/{asset}"

    def supports(self, version: str, arch: str) -> bool:
        if arch not in self.arches:
            return False
        since = dict(self.arch_since).get(arch)
        return since is None or Version(version) >= Version(since)


NERDCTL = Release(
    name="nerdctl",
    label="nerdctl",
    repo="containerd/nerdctl",
    asset_template="nerdctl-{version}-linux-{arch}.tar.gz",
    arches=("amd64", "arm64", "arm-v7", "ppc64le", "riscv64", "s390x", "loong64"),
    member_dir="",
    version_binaries=("nerdctl",),
    sums_asset="SHA256SUMS",
    arch_since=(("loong64", "2.1.0"),),
)
NERDCTL_FULL = Release(
    name="nerdctl-full",
    label="nerdctl-full",
    repo="containerd/nerdctl",
    asset_template="nerdctl-full-{version}-linux-{arch}.tar.gz",
    arches=("amd64", "arm64"),
    member_dir="",  # the whole tree, unpacked under full_prefix
    # The README carries the version the facts read: it moves into place last.
    version_binaries=("bin/nerdctl", "share/doc/nerdctl-full/README.md"),
    sums_asset="SHA256SUMS",
)
BUILDKIT = Release(
    name="buildkit",
    label="BuildKit",
    repo="moby/buildkit",
    asset_template="buildkit-v{version}.linux-{arch}.tar.gz",
    arches=("amd64", "arm64", "arm-v7", "s390x", "ppc64le", "riscv64"),
    member_dir="bin",
    version_binaries=("buildctl", "buildkitd"),
    provenance_template="buildkit-v{version}.linux-{arch}.provenance.json",  # since v0.11
)


def normalise_version(value: object, key: str = "version") -> str:
    """``"v0.12.5"`` or ``"0.12.5"`` to ``"0.12.5"``; anything else is a ReleaseError.

    >>> normalise_version("v0.12.5")
    '0.12.5'

    Values parsed from ``--data`` arrive as numbers (``0.10`` as ``0.1``): a number
    is never a full release version, so it is refused with a hint.
    """
    if isinstance(value, bool) or isinstance(value, (int, float)):
        raise ReleaseError(
            f"{key}={value!r} arrived as a number, not a release version: write all three parts, e.g. {key}=0.12.5"
        )
    match = VERSION_PATTERN.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise ReleaseError(f"{key}={value!r} is not a release version (expected X.Y.Z, e.g. 2.3.5 or v0.12.5)")
    version = match.group(1)
    try:
        Version(version)
    except InvalidVersion as error:  # pragma: no cover - the pattern admits only valid versions
        raise ReleaseError(f"{key}={value!r} is not a release version") from error
    return version


def upstream_arch(machine: str, release: Release, version: str) -> str:
    """The upstream architecture name for a host's ``uname -m``, or a ReleaseError."""
    arch = MACHINE_TO_ARCH.get(machine)
    if arch is None or not release.supports(version, arch):
        supported = ", ".join(release.arches)
        raise ReleaseError(
            f"architecture {machine!r} is not shipped by {release.label} {version} (it ships: {supported})"
        )
    return arch


def normalise_sha256(value: object, key: str) -> str | None:
    """A pinned SHA-256 in lower case, None when unset, else a ReleaseError."""
    if value in (None, ""):
        return None
    text = str(value).strip().lower().removeprefix("sha256:")
    if not SHA256_PATTERN.match(text):
        raise ReleaseError(f"{key}={value!r} is not a SHA-256 (64 hex digits)")
    return text


@cache
def _shipped_pins() -> dict[str, Any]:
    pins: dict[str, Any] = json.loads(CHECKSUM_TABLE.read_text())
    return pins


@cache
def checksum_table() -> dict[str, dict[str, dict[str, str]]]:
    """The shipped pins as ``{release repo name: {version: {asset: sha256}}}``."""
    raw = _shipped_pins()
    return {
        component: {
            version.lstrip("v"): {asset: entry["sha256"] for asset, entry in assets.items()}
            for version, assets in versions.items()
        }
        for component, versions in raw.items()
        if not component.startswith("_")
    }


def _table_component(release: Release) -> str:
    return release.repo.split("/")[1]


def pinned_sha256(release: Release, version: str, asset: str) -> str | None:
    return checksum_table().get(_table_component(release), {}).get(version, {}).get(asset)


@cache
def default_version(release: Release) -> str:
    """The newest version whose amd64 and arm64 archives are both pinned by a named source.

    Entries known only from unnamed index files are lower confidence and never a default.
    """
    raw = _shipped_pins()[_table_component(release)]
    candidates = []
    for tagged, assets in raw.items():
        version = tagged.lstrip("v")
        wanted = [release.asset(version, arch) for arch in ("amd64", "arm64")]
        if all(
            asset in assets and any(not source.startswith("unnamed") for source in assets[asset]["sources"])
            for asset in wanted
        ):
            candidates.append(Version(version))
    return str(max(candidates))


def parse_sha256sums(text: str) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <name>`` or ``<hex> *<name>``) as ``{name: hex}``."""
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and SHA256_PATTERN.match(parts[0].lower()):
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def once_per_run(function: Callable[..., T]) -> Callable[..., T]:
    """Cache ``function`` by its arguments; concurrent callers wait for the one call.

    pyinfra prepares hosts concurrently (gevent patches ``threading``), so without the
    per-key lock every host would fetch the same file. Failures are not cached.
    """
    results: dict[tuple[Any, ...], T] = {}
    locks: dict[tuple[Any, ...], threading.Lock] = defaultdict(threading.Lock)

    @wraps(function)
    def call(*args: Any) -> T:
        with locks[args]:
            if args not in results:
                results[args] = function(*args)
            return results[args]

    return call


@once_per_run
def fetch_text(url: str, timeout: float = 20) -> str:
    """GET ``url`` from the controller, once per run; a ReleaseError says why it failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text: str = response.read().decode()
            return text
    except urllib.error.HTTPError as error:
        raise ReleaseError(f"{url} answered HTTP {error.code}") from error
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "reason", error)
        raise ReleaseError(f"cannot fetch {url}: {reason}") from error


@dataclass(frozen=True)
class Download:
    """One archive to fetch, the hash it must have, and the release's files that vouched for that hash."""

    release: Release
    version: str
    arch: str
    url: str
    sha256: str
    checksum_source: str
    evidence: tuple[str, ...] = ()  # URLs of the SHA256SUMS, its signature or the provenance read


def resolve_download(
    release: Release,
    version: str,
    arch: str,
    github_url: str,
    pin: str | None,
    fetch: Callable[[str], str] = fetch_text,
    keyring: str | None = None,
) -> Download:
    """Where to fetch ``release`` and which SHA-256 it must match.

    Checksum order: explicit pin, else the shipped table, else what the release publishes
    (nerdctl's SHA256SUMS, BuildKit's provenance statement), else a ReleaseError. With a
    ``keyring`` (nerdctl's), the hash must also be the one a SHA256SUMS signed by one of
    its keys lists, whichever source gave it.
    """
    asset = release.asset(version, arch)
    url = release.url(github_url, version, asset)
    table = pinned_sha256(release, version, asset)
    evidence: tuple[str, ...] = ()
    if pin:
        sha256, source = pin, "explicit pin"
    elif table:
        sha256, source = table, "shipped checksum table"
    else:
        sha256, source, evidence = _published_sha256(release, version, arch, github_url, fetch)
    if keyring and release.sums_asset:
        signer, signed_evidence = _signed_sha256(release, version, asset, github_url, fetch, keyring, sha256, source)
        source = f"{source}, {release.sums_asset} signed by {signer}"
        evidence = tuple(dict.fromkeys(evidence + signed_evidence))
    return Download(release, version, arch, url, sha256, source, evidence)


def _published_sha256(
    release: Release, version: str, arch: str, github_url: str, fetch: Callable[[str], str]
) -> tuple[str, str, tuple[str, ...]]:
    """The hash the release itself publishes for the archive, where it says so, and that file's URL."""
    asset = release.asset(version, arch)
    key = f"{release.name.split('-')[0]}_sha256"
    if release.sums_asset:
        sums_url = release.url(github_url, version, release.sums_asset)
        sums = parse_sha256sums(fetch(sums_url))
        if asset not in sums:
            raise ReleaseError(
                f"{release.label} {version}: {asset} is not listed in the release's {release.sums_asset}: "
                f"pin it with {key}=<sha256>"
            )
        return sums[asset], release.sums_asset, (sums_url,)
    assert release.provenance_template, "each release publishes a SHA256SUMS or provenance statements"
    provenance = release.provenance_template.format(version=version, arch=arch)
    provenance_url = release.url(github_url, version, provenance)
    try:
        text = fetch(provenance_url)
    except ReleaseError as error:
        raise ReleaseError(
            f"{release.label} {version} ({asset}) is not in the shipped checksum table and its provenance "
            f"cannot be read ({error}; {release.label} publishes one from v0.11): pin it with {key}=<sha256>"
        ) from error
    try:
        return provenance_sha256(text, asset), provenance, (provenance_url,)
    except ValueError as error:
        raise ReleaseError(f"{release.label} {version}: {asset} refused: its {provenance} {error}") from error


# One gpgv check per SHA256SUMS, signature and keyring in a run, however many hosts ask.
_good_signer = once_per_run(good_signer)


def _signed_sha256(
    release: Release,
    version: str,
    asset: str,
    github_url: str,
    fetch: Callable[[str], str],
    keyring: str,
    sha256: str,
    source: str,
) -> tuple[str, tuple[str, ...]]:
    """Who signed the release's SHA256SUMS that agrees with ``sha256`` (from ``source``), and both files' URLs."""
    sums_asset = str(release.sums_asset)
    sums_url = release.url(github_url, version, sums_asset)
    signature_url = f"{sums_url}.asc"
    refused = f"{release.label} {version}: {asset} refused"
    try:
        sums, signature = fetch(sums_url), fetch(signature_url)
    except ReleaseError as error:
        raise ReleaseError(f"{refused}: nerdctl_gpg_keyring is set and {error}") from error
    try:
        signer = _good_signer(keyring, sums, signature)
    except ValueError as error:
        raise ReleaseError(f"{refused}: the release's {sums_asset}.asc {error}") from error
    signed = parse_sha256sums(sums).get(asset)
    if signed != sha256:
        listed = f"lists {signed}" if signed else "does not list it"
        raise ReleaseError(f"{refused}: the {source} says {sha256}, the signed {sums_asset} {listed}")
    return signer, (sums_url, signature_url)
