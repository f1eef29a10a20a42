"""Everything the build-host deploys decide from, in one remote command (``BuildHostState``)."""

from __future__ import annotations

import base64
import shlex

from pyinfra.api import FactBase

from ..layout import (
    BUILDKIT_GOOD_DIR,
    CREATED_FOLDERS,
    DEFAULT_BIN_DIR,
    DEFAULT_FULL_PREFIX,
    K3S_CERTS_DIR,
    K3S_REGISTRIES,
    MARKER,
    STALE_MINUTES,
    TEMP_PREFIX,
    TLS_SERVER,
    UNIT_DIR,
    UPLOAD_DIR,
    WORK_DIR,
)
from .common import (
    PLATFORM_COMMAND,
    SHA256_LINE,
    STAT_FIELDS,
    file_kind,
    in_c_locale,
    manifest_glob,
    parse_key_values,
    platform_from,
    shell_glob,
)
from .foreign import foreign_buildkit_command, parse_foreign_buildkit
from .types import BuildHostStateDict, ManagedPathDict, PlatformDict, StatDict
from .units import parse_unit_freshness, unit_state_command
from .versions import (
    VERSIONED_BINARIES,
    full_readme_command,
    parse_buildkit_versions,
    parse_executed,
    parse_full_readme,
    parse_nerdctl_version,
    version_command,
)


class BuildHostPlatform(FactBase[PlatformDict | None]):
    """The machine architecture (``uname -m``) and whether systemd is the running init.

    .. code:: python

        {"machine": "x86_64", "systemd": True}
    """

    # pyinfra runs a string command as it is; FactBase declares only the method form.
    command = in_c_locale(PLATFORM_COMMAND)  # type: ignore[assignment]

    def process(self, output: list[str]) -> PlatformDict:
        return platform_from(parse_key_values(output))

    @staticmethod
    def default() -> None:
        """None: the host could not be read (pyinfra then fails that host alone)."""
        return None


def managed_paths_command(paths: tuple[str, ...]) -> str:
    """``path=PATH|raw mode|mode|user|group`` for each of ``paths`` that exists, ``sha256sum`` of the files,
    and ``PATH:MARKER`` for each file that carries this package's ``MARKER`` line (proof that it is ours).

    Three processes whatever the number of paths: this runs on every host on every run.
    """
    quoted = " ".join(shlex.quote(path) for path in paths)
    return (
        f"stat -c 'path=%n|{STAT_FIELDS}' {quoted} 2>/dev/null; sha256sum {quoted} 2>/dev/null; "
        f"grep -HxF {shlex.quote(MARKER)} {quoted} 2>/dev/null; true"
    )


def created_folders_command(listing: str = CREATED_FOLDERS) -> str:
    """``folder=PATH|raw mode|mode|user|group`` for each folder in ``listing`` (one a line) that exists.

    One process whatever the number of folders (the list is read by the shell itself).
    """
    quoted = shlex.quote(listing)
    return (
        f'if [ -f {quoted} ]; then set --; while IFS= read -r folder; do set -- "$@" "$folder"; done < {quoted}; '
        f"if [ $# -gt 0 ]; then stat -c 'folder=%n|{STAT_FIELDS}' \"$@\" 2>/dev/null; fi; fi; true"
    )


def leftovers_command(destinations: tuple[str, ...]) -> str:
    """``leftover=PATH`` for what killed runs left, untouched for ``STALE_MINUTES``: uploads, scratch folders,
    the install's unpack folders in ``destinations`` and the check's partial copies. One ``find``.
    """
    folders = " ".join(
        shlex.quote(folder) for folder in dict.fromkeys((WORK_DIR, UPLOAD_DIR, BUILDKIT_GOOD_DIR, *destinations))
    )
    matches = (
        f"-path {shlex.quote(WORK_DIR + '/*')} -o -path {shlex.quote(UPLOAD_DIR + '/*')} "
        f"-o -path {shlex.quote(BUILDKIT_GOOD_DIR + '/*.tmp')} -o -name {shlex.quote(TEMP_PREFIX + '.*')}"
    )
    return (
        f"find {folders} -mindepth 1 -maxdepth 1 -mmin +{STALE_MINUTES} \\( {matches} \\) "
        "-printf 'leftover=%p\\n' 2>/dev/null; true"
    )


TLS_CERT_PREFIX = "tls_cert="


def tls_cert_command(path: str = TLS_SERVER) -> str:
    """A remote builder's server certificate, each line after ``tls_cert=``: the controller decides from it whether
    it still serves (``deploys.remote``). Public, and a few hundred bytes: read on every run. Only the
    certificate's block: the key beside it in the file never leaves the host."""
    block = "/^-----BEGIN CERTIFICATE-----$/,/^-----END CERTIFICATE-----$/"
    return f"sed -n '{block}s/^/{TLS_CERT_PREFIX}/p' {shlex.quote(path)} 2>/dev/null; true"


def parse_tls_cert(lines: list[str]) -> str | None:
    """The lines of ``tls_cert_command`` as the file's text; None when there is no such file."""
    found = [line[len(TLS_CERT_PREFIX) :] for line in lines if line.startswith(TLS_CERT_PREFIX)]
    return "\n".join(found) + "\n" if found else None


def k3s_registries_command(registries: str = K3S_REGISTRIES, certs_dir: str = K3S_CERTS_DIR) -> str:
    """``k3s_registries=BASE64`` of k3s's registries.yaml when there is one, ``k3s_certs_d=yes`` when its
    hosts.toml folder exists; nothing else, so a host without k3s pays two shell tests.

    Encoded, so that no line of the operator's file can read as another part's output.
    """
    return (
        f"if [ -f {shlex.quote(registries)} ]; then printf k3s_registries=; base64 -w0 < {shlex.quote(registries)}; "
        f"echo; fi; if [ -d {shlex.quote(certs_dir)} ]; then echo k3s_certs_d=yes; fi"
    )


def decoded_registries(value: str | None) -> str | None:
    """The text of registries.yaml from ``k3s_registries_command``'s value; None without the file."""
    if value is None:
        return None
    return base64.b64decode(value).decode("utf-8", errors="replace")


def parse_stat_line(line: str, prefix: str) -> tuple[str, StatDict] | None:
    """A ``PREFIX=PATH|raw mode|mode|user|group`` line to ``(path, {"kind", "mode", "user", "group"})``."""
    if not line.startswith(prefix):
        return None
    path, raw_mode, mode, user, group = line[len(prefix) :].rsplit("|", 4)
    return path, {"kind": file_kind(raw_mode), "mode": mode, "user": user, "group": group}


def parse_created_folders(lines: list[str]) -> dict[str, StatDict]:
    """Lines of ``created_folders_command`` to ``{path: {"kind", "mode", "user", "group"}}``."""
    return dict(found for found in (parse_stat_line(line, "folder=") for line in lines) if found)


MARKED = f":{MARKER}"  # after the path, in grep -H's output


def parse_managed_paths(lines: list[str]) -> dict[str, ManagedPathDict]:
    """Lines of ``managed_paths_command`` to ``{path: {"kind", "mode", "user", "group", "sha256", "ours"}}``."""
    paths: dict[str, ManagedPathDict] = {}
    digests = {}
    marked = set()
    for line in lines:
        found = parse_stat_line(line, "path=")
        if found:
            path, values = found
            paths[path] = {**values, "sha256": None, "ours": False}
        elif line.endswith(MARKED):
            marked.add(line[: -len(MARKED)])
        else:
            digest, _, path = line.partition("  ")
            if SHA256_LINE.match(digest):
                digests[path] = digest
    for path, digest in digests.items():
        if path in paths:
            paths[path]["sha256"] = digest
    for path in marked & paths.keys():
        paths[path]["ours"] = True
    return paths


class BuildHostState(FactBase[BuildHostStateDict | None]):
    """Everything the build-host deploys decide from, in one remote command.

    The platform, the installed versions, the managed files and folders (mode,
    owner, SHA-256), the folders the install created (mode, owner), whether the
    socket group exists, the units' state, what else runs BuildKit
    (``facts.foreign``), what killed runs left (``leftovers_command``), and
    k3s's registry configuration (``k3s_registries_command``), so a converged
    host costs one round trip.

    .. code:: python

        {"machine": "x86_64", "systemd": True, "nerdctl": "2.3.5",
         "buildkit": {"buildkitd": "0.12.5", "buildctl": "0.12.5"},
         "versions_executed": (),  # binaries whose recorded version no longer held (facts.versions)
         "paths": {"/etc/nerdctl/nerdctl.toml": {"kind": "file", "mode": "644", ...}},
         "created_dirs": {"/opt/tools": {"kind": "dir", "mode": "755", "user": "root", "group": "root"}},
         "group_exists": True, "units": {"socket": {...}, "service": {...}, "containerd": {...}},
         "full": {"version": None, "components": {}, "managed": False},
         "foreign_buildkit": {"units": [], "processes": []},
         "leftovers": ["/var/lib/pyinfra-nerdctl/uploads/3f1e...9a.5c2b..."],
         "tls_cert": "# Managed by pyinfra-nerdctl...\\n-----BEGIN CERTIFICATE-----\\n...",  # None: no remote builder
         "k3s_registries": "mirrors:\\n  docker.io:\\n ...",  # k3s's registries.yaml; None: no such file
         "k3s_certs_d": True}
    """

    def command(
        self,
        bin_dir: str = DEFAULT_BIN_DIR,
        paths: tuple[str, ...] = (),
        group: str | None = None,
        unit_dir: str = UNIT_DIR,
        full_prefix: str = DEFAULT_FULL_PREFIX,
        full_manifests: str = manifest_glob("nerdctl-full"),
        k3s_registries: bool = True,
    ) -> str:
        parts = [
            PLATFORM_COMMAND,
            full_readme_command(full_prefix),
            f"for manifest in {shell_glob(full_manifests)}; do "
            'if [ -f "$manifest" ]; then echo full_managed=yes; break; fi; done',
            version_command(*(f"{bin_dir}/{name}" for name in VERSIONED_BINARIES)),
            managed_paths_command(tuple(paths)),
            created_folders_command(),
            unit_state_command(bin_dir, unit_dir, full_prefix),
            foreign_buildkit_command(),
            leftovers_command((bin_dir, full_prefix)),
            tls_cert_command(),
        ]
        if group:
            parts.append(f"if getent group {shlex.quote(group)} >/dev/null; then echo group=yes; fi")
        if k3s_registries:
            parts.append(k3s_registries_command())
        return in_c_locale("; ".join(parts))

    def process(self, output: list[str]) -> BuildHostStateDict:
        values = parse_key_values(output)
        return {
            **platform_from(values),
            "nerdctl": parse_nerdctl_version(output),
            "buildkit": parse_buildkit_versions(output),
            "versions_executed": parse_executed(output),
            "paths": parse_managed_paths(output),
            "created_dirs": parse_created_folders(output),
            "group_exists": values.get("group") == "yes",
            "units": parse_unit_freshness(output),
            "full": {**parse_full_readme(output), "managed": values.get("full_managed") == "yes"},
            "foreign_buildkit": parse_foreign_buildkit(output),
            "leftovers": [line[len("leftover=") :] for line in output if line.startswith("leftover=")],
            "tls_cert": parse_tls_cert(output),
            "k3s_registries": decoded_registries(values.get("k3s_registries")),
            "k3s_certs_d": values.get("k3s_certs_d") == "yes",
        }

    @staticmethod
    def default() -> None:
        """None: the host could not be read (pyinfra then fails that host alone, and the deploys skip it)."""
        return None
