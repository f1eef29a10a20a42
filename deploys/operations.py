"""Operations pyinfra lacks: install release archives verified and atomically, and remove them.

pyinfra's ``files.download`` moves the file into place before it checks the
hash, so a bad download would land; here nothing reaches ``bin_dir`` before
every archive of the step has matched its SHA-256 in full.
"""

from __future__ import annotations

import shlex
from collections.abc import Generator, Sequence
from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation

from ..facts import STATE_DIR, manifest_glob, manifest_path
from .releases import Download, Release

TEMP_PREFIX = ".pyinfra-nerdctl"

# Shell functions shared by every install script; each failure names what and why.
INSTALL_FUNCTIONS = r"""
fetch() {
  case "$1" in /*)
    mv -f "$1" "$2" || { echo "cannot take the uploaded $1" >&2; exit 1; }
  ;; *)
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --retry 2 --output "$2" "$1" || { echo "download of $1 failed" >&2; exit 1; }
  elif command -v wget >/dev/null 2>&1; then
    wget --quiet --tries=3 --output-document="$2" "$1" || { echo "download of $1 failed" >&2; exit 1; }
  else
    echo "neither curl nor wget is installed: cannot download $1" >&2; exit 1
  fi
  ;; esac
  got=$(sha256sum "$2" | cut -d' ' -f1)
  if [ "$got" != "$3" ]; then
    echo "SHA-256 mismatch for $1: expected $3, got $got; nothing was installed" >&2; exit 1
  fi
}
unpack() {
  mkdir "$unpacked/$2"
  tar -xzf "$work/$2.tar.gz" -C "$unpacked/$2" || { echo "cannot unpack $1: nothing was installed" >&2; exit 1; }
  for name in $4; do
    [ -f "$unpacked/$2/$3/$name" ] || { echo "$1 has no $name: nothing was installed" >&2; exit 1; }
  done
  (cd "$unpacked/$2/$3" && find . \( -type f -o -type l \) | sed 's|^\./||' | sort) > "$work/$2.files"
  sed "s|^|$dest/|" "$work/$2.files" > "$work/$2.paths"
  cat "$work/$2.paths" >> "$work/all.paths"
  chown -R root:root "$unpacked/$2/$3" && chmod -R u=rwX,go=rX "$unpacked/$2/$3"
}
put() {
  mkdir -p "$(dirname "$dest/$3")" && mv -f "$unpacked/$1/$2/$3" "$dest/$3"
}
place() {
  for name in $(cat "$work/$1.files"); do
    case " $3 " in *" $name "*) continue;; esac
    put "$1" "$2" "$name"
  done
}
place_last() {
  for name in $3; do put "$1" "$2" "$name"; done
}
drop() {
  rm -f "$1"
  dir=$(dirname "$1")
  while case "${dir##*/}" in bin|sbin|lib|lib64|share|etc|include|man|src|games|local|usr|opt|"") false;; esac \
      && rmdir "$dir" 2>/dev/null; do
    dir=$(dirname "$dir")
  done
}
intend() {
  cat "$work/$1.paths" "$2" 2>/dev/null | sort -u > "$2.new" && mv -f "$2.new" "$2"
}
record() {
  for path in $(grep -vxF -f "$work/$1.paths" "$2" || true); do drop "$path"; done
  cp "$work/$1.paths" "$2.new" && mv -f "$2.new" "$2"
}
retire() {
  if [ -f "$1" ]; then
    for path in $(cat "$1"); do grep -qxF "$path" "$work/all.paths" || drop "$path"; done
    rm -f "$1"
  fi
}
"""


def upload_path(download: Download) -> str:
    """Where an archive the controller uploads waits on the host for ``install_script``."""
    return f"/tmp/{TEMP_PREFIX}-upload.{download.sha256}"


def install_script(
    downloads: Sequence[Download], dest: str, uploaded: bool = False, retired: Sequence[Release] = ()
) -> str:
    """The shell script that installs the files of every archive in ``downloads`` under ``dest``.

    ``retired`` lists releases of the other flavor: the files their manifests list go,
    except those the new archives put back in the same place. Manifests hold absolute
    paths, so they are right wherever the other flavor was installed; folders left
    empty go too, short of standard ones such as ``bin`` or ``share``.

    With ``uploaded``, the archives were uploaded to ``upload_path`` instead of being
    downloaded by the host; they are verified all the same.

    All archives are downloaded to a temporary folder (curl, else wget) and their
    SHA-256 compared in full before any is unpacked; they are unpacked into a
    fresh folder inside ``dest`` (same filesystem, so every move is an atomic
    rename). Files move in with the version-carrying binaries last, so an
    interrupted run still reports the old version and a rerun repeats it. Files
    that the previous release of an archive had and this one lacks are removed
    (manifests under ``STATE_DIR``; before the moves a manifest lists old and new
    files alike, so a removal after an interrupted run still finds them all).
    Temporary files go on success and failure, and those of an earlier run that
    was killed go at the start.
    """
    quote = shlex.quote
    uploads = " ".join(upload_path(download) for download in downloads) if uploaded else ""
    steps: dict[str, list[str]] = {"fetch": [], "unpack": [], "intend": [], "place": [], "place_last": [], "record": []}
    for index, download in enumerate(downloads):
        release = download.release
        member_dir = quote(release.member_dir or ".")
        last = quote(" ".join(release.version_binaries))
        source = upload_path(download) if uploaded else download.url
        steps["fetch"].append(f'fetch {quote(source)} "$work/{index}.tar.gz" {download.sha256}')
        steps["unpack"].append(f"unpack {quote(download.url)} {index} {member_dir} {last}")
        steps["intend"].append(f"intend {index} {quote(manifest_path(release.name, dest))}")
        steps["place"].append(f"place {index} {member_dir} {last}")
        steps["place_last"].append(f"place_last {index} {member_dir} {last}")
        steps["record"].append(f"record {index} {quote(manifest_path(release.name, dest))}")
    for release in retired:
        steps["record"].append(f'for manifest in {manifest_glob(release.name)}; do retire "$manifest"; done')
    return (
        "\n".join(
            [
                "set -eu",
                f"dest={quote(dest)}",
                INSTALL_FUNCTIONS.strip(),
                'mkdir -p "$dest" 2>/dev/null || { echo "cannot create bin_dir $dest" >&2; exit 1; }',
                # Folders a killed earlier run could not clean up; one deploy runs per host at a time.
                f'rm -rf "$dest"/{TEMP_PREFIX}.* "${{TMPDIR:-/tmp}}"/{TEMP_PREFIX}.*',
                f'work=$(mktemp -d -t {TEMP_PREFIX}.XXXXXX) || {{ echo "cannot create a temporary folder" >&2; exit 1; }}',
                f"trap 'rm -rf \"$work\" {uploads}' EXIT",
                *steps["fetch"],
                f'unpacked=$(mktemp -d "$dest/{TEMP_PREFIX}.XXXXXX" 2>/dev/null) || '
                '{ echo "bin_dir $dest is not writable: nothing was installed" >&2; exit 1; }',
                f'trap \'rm -rf "$work" "$unpacked" {uploads}\' EXIT',
                *steps["unpack"],
                f"mkdir -p {STATE_DIR}",
                *steps["intend"],
                *steps["place"],
                *steps["place_last"],
                *steps["record"],
            ]
        )
        + "\n"
    )


@operation()
def release_files(
    downloads: Sequence[Download], dest: str, uploads: Sequence[str] = (), retired: Sequence[Release] = ()
) -> Generator[str | FileUploadCommand, None, None]:
    """Install the files of every archive in ``downloads`` under ``dest`` in one verified step.

    + downloads: the archives that are not installed yet (see ``releases.resolve_download``)
    + dest: where their files go (``bin_dir``, or ``full_prefix`` for the full archive)
    + retired: releases of the other flavor, whose files to take away
    + uploads: the controller's copies of ``downloads``, in order, to upload instead of
      letting the host download them

    **Example:**

    .. code:: python

        release_files(downloads=[nerdctl_download], dest="/usr/local/bin")
    """
    if not downloads:
        host.noop("the wanted releases are installed")
        return
    if uploads:
        for download, local_path in zip(downloads, uploads, strict=True):
            yield FileUploadCommand(local_path, upload_path(download))
    yield install_script(downloads, dest, uploaded=bool(uploads), retired=retired)


def removal_script(release: Release, dest: str) -> str:
    """Remove the files ``release`` installed (its manifest, else its known binaries under ``dest``)."""
    quote = shlex.quote
    manifest = quote(manifest_path(release.name, dest))
    fallback = " ".join(quote(f"{dest}/{name}") for name in release.version_binaries)
    drop = INSTALL_FUNCTIONS[INSTALL_FUNCTIONS.index("drop() {") : INSTALL_FUNCTIONS.index("intend() {")]
    return (
        f"{drop}\n"
        f"paths=$(cat {manifest} 2>/dev/null || echo {fallback})\n"
        'for path in $paths; do drop "$path"; done\n'
        f"rm -f {manifest}\n"
    )


@operation()
def remove_release_files(release: Release, dest: str, installed_files: Sequence[str]) -> Generator[str, None, None]:
    """Remove the files of ``release`` from under ``dest``.

    + release: which archive's files (``releases.NERDCTL``, ``releases.BUILDKIT``, ``releases.NERDCTL_FULL``)
    + dest: where they were installed (``bin_dir``, or ``full_prefix``)
    + installed_files: what the ``ReleaseFiles`` fact found (nothing: no change)
    """
    if not installed_files:
        host.noop(f"no {release.name} files under {dest}")
        return
    yield removal_script(release, dest)


@operation()
def write_file(path: str, content: str, mode: str = "644") -> Generator[str | FileUploadCommand, None, None]:
    """Write ``content`` to ``path`` as ``root:root`` ``mode``, atomically; the caller has decided it differs.

    Uploaded beside ``path``, given its owner and mode, then renamed over it, so
    no reader ever sees a partial file or a moment of wrong permissions. Unlike
    ``files.put`` it reads no state: the deploys already know it from one fact.

    .. code:: python

        write_file(path="/etc/nerdctl/nerdctl.toml", content='namespace = "default"\\n')
    """
    temp = f"{path}.{TEMP_PREFIX.lstrip('.')}.tmp"
    yield FileUploadCommand(StringIO(content), temp)
    quoted, quoted_temp = shlex.quote(path), shlex.quote(temp)
    yield f"chown root:root {quoted_temp} && chmod {mode} {quoted_temp} && mv -f {quoted_temp} {quoted}"


@operation()
def root_directory(path: str, mode: str = "755") -> Generator[str, None, None]:
    """``path`` as a ``root:root`` ``mode`` folder; the caller has decided it is missing or wrong.

    .. code:: python

        root_directory(path="/etc/buildkit")
    """
    quoted = shlex.quote(path)
    yield f"mkdir -p {quoted} && chown root:root {quoted} && chmod {mode} {quoted}"
