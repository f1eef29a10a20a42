"""The one operation pyinfra lacks: install a release archive's files, verified and atomically.

pyinfra's ``files.download`` moves the file into place before it checks the
hash, so a bad download would land; here nothing reaches ``bin_dir`` before the
archive's SHA-256 matches in full.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator

from pyinfra import host
from pyinfra.api import operation

from .releases import Download

STATE_DIR = "/var/lib/pyinfra-nerdctl"


def install_script(download: Download, bin_dir: str) -> str:
    """The shell script that installs ``download``'s files into ``bin_dir``.

    Download to a temporary file (curl, else wget), compare the SHA-256 in full,
    unpack into a fresh folder inside ``bin_dir`` (same filesystem, so every move
    is an atomic rename), move the files in, with the version-carrying binaries
    last, and remove files the previous release of this archive had and this
    one lacks (listed in a manifest under ``STATE_DIR``). Temporary files go on
    success and failure alike.
    """
    release = download.release
    quote = shlex.quote
    members = f'"$unpacked"/{quote(release.member_dir)}' if release.member_dir else '"$unpacked"'
    last = " ".join(quote(name) for name in release.version_binaries)
    manifest = f"{STATE_DIR}/{release.name}.files"
    return f"""set -eu
url={quote(download.url)}
want={download.sha256}
bin_dir={quote(bin_dir)}
manifest={quote(manifest)}
mkdir -p "$bin_dir"
work=$(mktemp -d)
archive="$work/archive"
listing="$work/files"
unpacked=$(mktemp -d "$bin_dir/.pyinfra-nerdctl.XXXXXX")
trap 'rm -rf "$work" "$unpacked"' EXIT
if command -v curl >/dev/null 2>&1; then
  curl --fail --silent --show-error --location --retry 2 --output "$archive" "$url" || {{ echo "download of $url failed" >&2; exit 1; }}
elif command -v wget >/dev/null 2>&1; then
  wget --quiet --tries=3 --output-document="$archive" "$url" || {{ echo "download of $url failed" >&2; exit 1; }}
else
  echo "neither curl nor wget is installed: cannot download $url" >&2; exit 1
fi
got=$(sha256sum "$archive" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  echo "SHA-256 mismatch for $url: expected $want, got $got; nothing was installed" >&2; exit 1
fi
tar -xzf "$archive" -C "$unpacked"
members={members}
for name in {last}; do
  [ -f "$members/$name" ] || {{ echo "$url has no $name: nothing was installed" >&2; exit 1; }}
done
(cd "$members" && find . -maxdepth 1 -type f | sed 's|^\\./||' | sort) > "$listing"
chown root:root "$members"/*
chmod 0755 "$members"/*
for name in $(cat "$listing"); do
  case " {last} " in *" $name "*) continue;; esac
  mv -f "$members/$name" "$bin_dir/$name"
done
for name in {last}; do mv -f "$members/$name" "$bin_dir/$name"; done
mkdir -p {quote(STATE_DIR)}
if [ -f "$manifest" ]; then
  for name in $(grep -vxF -f "$listing" "$manifest" || true); do rm -f "$bin_dir/$name"; done
fi
cp "$listing" "$manifest.new" && mv -f "$manifest.new" "$manifest"
"""


@operation()
def release_files(download: Download, bin_dir: str, installed_version: str | None) -> Generator[str, None, None]:
    """Install the files of ``download`` into ``bin_dir`` unless its version is installed.

    + download: the archive, its URL and SHA-256 (from ``releases.resolve_download``)
    + bin_dir: where the executables go
    + installed_version: what the host's version fact reports (None: not installed)

    **Example:**

    .. code:: python

        release_files(download=download, bin_dir="/usr/local/bin", installed_version="2.3.4")
    """
    name, version = download.release.name, download.version
    if installed_version == version:
        host.noop(f"{name} {version} is installed")
        return
    yield install_script(download, bin_dir)
