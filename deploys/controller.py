"""Archives fetched once on the controller: the release cache and the offline prefetch.

With ``download_on_controller`` (or a ``github_url`` that is a folder on the
controller) every archive is fetched and verified once per fleet into a local
cache, then uploaded to the hosts that need it, so hosts need no route to any
mirror. ``prefetch`` fills a folder laid out like github.com's release paths,
for carrying into an air-gapped site.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ..layout import STALE_MINUTES
from .releases import (
    BUILDKIT,
    NERDCTL,
    NERDCTL_FULL,
    Download,
    ReleaseError,
    fetch_text,
    normalise_version,
    once_per_run,
    resolve_download,
)


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/pyinfra-nerdctl/releases``, else ``~/.cache/pyinfra-nerdctl/releases``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pyinfra-nerdctl", "releases")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@once_per_run
def fetch_verified(url: str, sha256: str, target: Path) -> Path:
    """``url`` at ``target``, its SHA-256 checked in full; reused when already there, fetched once per run."""
    if target.exists() and _sha256_of(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as handle:
            shutil.copyfileobj(response, handle)
        got = _sha256_of(partial)
        if got != sha256:
            raise ReleaseError(f"SHA-256 mismatch for {url}: expected {sha256}, got {got}")
        partial.rename(target)
    except urllib.error.HTTPError as error:
        raise ReleaseError(f"download of {url} failed: HTTP {error.code}") from error
    except (urllib.error.URLError, OSError) as error:
        raise ReleaseError(f"download of {url} failed: {getattr(error, 'reason', error)}") from error
    finally:
        partial.unlink(missing_ok=True)
    return target


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_partials(cache_dir: str, now: float | None = None) -> list[Path]:
    """Remove what killed fetches left in ``cache_dir``: a ``.NAME.PID.partial`` whose process is gone and that is
    untouched for a minute (a cache shared between controllers), or untouched for ``STALE_MINUTES`` whatever its pid.
    """
    now = time.time() if now is None else now
    removed = []
    for partial in Path(cache_dir).glob("*/.*.partial"):
        try:
            idle = now - partial.stat().st_mtime
        except FileNotFoundError:
            continue
        pid = partial.name.rsplit(".", 2)[-2]
        dead = pid.isdigit() and not _running(int(pid))
        if (dead and idle > 60) or idle > STALE_MINUTES * 60:
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def cache_path(download: Download, cache_dir: str) -> Path:
    """Where the controller keeps its verified copy of ``download`` (decided without fetching it)."""
    return Path(cache_dir) / download.sha256 / Path(download.url).name


def cached_archive(download: Download, cache_dir: str) -> Path:
    """The controller's verified copy of ``download``, fetched on first use, the files that vouched for it beside it."""
    archive = fetch_verified(download.url, download.sha256, cache_path(download, cache_dir))
    for url in download.evidence:
        keep_text(url, archive.with_name(Path(url).name))
    return archive


def keep_text(url: str, target: Path) -> Path:
    """``url``'s text (read once per run) at ``target``, written whole or not at all."""
    text = fetch_text(url)
    if not target.exists() or target.read_text() != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_text(text)
        partial.rename(target)
    return target


def prefetch(
    dest: Path,
    github_url: str,
    nerdctl_versions: Sequence[str] = (),
    buildkit_versions: Sequence[str] = (),
    arches: Sequence[str] = ("amd64", "arm64"),
    full: bool = False,
    pins: dict[str, str] | None = None,
    keyring: str | None = None,
) -> list[Path]:
    """Fetch and verify archives into ``dest`` under github.com's paths, with what vouches for them.

    That is nerdctl's SHA256SUMS and its signature (checked against ``keyring`` when given;
    kept when the release has one, for a site that sets ``nerdctl_gpg_keyring`` later) and
    BuildKit's provenance statements. ``pins`` maps asset names to SHA-256 for archives that
    neither the table nor the release's own files cover.
    """
    pins = pins or {}
    wanted = [(NERDCTL, version) for version in nerdctl_versions]
    wanted += [(NERDCTL_FULL, version) for version in nerdctl_versions if full]
    wanted += [(BUILDKIT, version) for version in buildkit_versions]
    fetched = []
    for release, version in wanted:
        version = normalise_version(version, f"{release.name} version")
        evidence = []
        if release.sums_asset:
            sums_url = release.url(github_url, version, release.sums_asset)
            evidence = [sums_url] + ([f"{sums_url}.asc"] if _published(f"{sums_url}.asc") else [])
        for arch in arches:
            if not release.supports(version, arch):
                continue
            pin = pins.get(release.asset(version, arch))
            download = resolve_download(release, version, arch, github_url, pin, keyring=keyring)
            fetched.append(fetch_verified(download.url, download.sha256, dest / _github_path(download.url, github_url)))
            evidence += download.evidence
        fetched += [keep_text(url, dest / _github_path(url, github_url)) for url in dict.fromkeys(evidence)]
    return fetched


def _published(url: str) -> bool:
    try:
        fetch_text(url)
    except ReleaseError:
        return False
    return True


def _github_path(url: str, github_url: str) -> str:
    return url[len(github_url.rstrip("/")) :].lstrip("/")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyinfra_nerdctl.deploys.controller",
        description="Fetch release archives into a folder laid out like github.com, for offline use "
        "as github_url=/that/folder.",
    )
    parser.add_argument("dest", type=Path)
    parser.add_argument("--nerdctl", action="append", default=[], metavar="VERSION")
    parser.add_argument("--buildkit", action="append", default=[], metavar="VERSION")
    parser.add_argument("--arch", action="append", default=[], help="upstream arch name (default: amd64 and arm64)")
    parser.add_argument("--full", action="store_true", help="also the nerdctl-full archives")
    parser.add_argument("--github-url", default="https://github.com")
    parser.add_argument("--pin", action="append", default=[], metavar="ASSET=SHA256")
    parser.add_argument(
        "--nerdctl-gpg-keyring", metavar="FILE", help="public keys: nerdctl's SHA256SUMS must be signed by one"
    )
    args = parser.parse_args(argv)
    try:
        pins = dict(pin.split("=", 1) for pin in args.pin)
        paths = prefetch(
            args.dest,
            args.github_url,
            args.nerdctl,
            args.buildkit,
            args.arch or ["amd64", "arm64"],
            args.full,
            pins,
            args.nerdctl_gpg_keyring,
        )
    except (ReleaseError, ValueError, OSError) as error:
        print(f"prefetch: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
