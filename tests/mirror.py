"""A stand-in GitHub release mirror on 127.0.0.1.

Builds, for any version asked, the nerdctl, nerdctl-full and BuildKit release
archives in the exact upstream layout (../shared/upstream-facts.md) with small
stand-in executables inside, and serves them under github.com's paths, with
what upstream publishes beside them: nerdctl's SHA256SUMS and its signature
(by a test key made on first use), BuildKit's provenance statements. It can
be told to fail (404, 500, a truncated body, an HTML page with status 200,
wrong bytes, or a body that arrives only after a pause) and counts what it served.
"""

from __future__ import annotations

import atexit
import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STANDINS = Path(__file__).parent / "standins"
# nerdctl's real rootless scripts, packed into the archives in place of stand-ins when present.
REAL_ROOTLESS = Path(__file__).resolve().parents[2] / "shared" / "real-nerdctl-rootless"
ROOTLESS_SCRIPTS = ("containerd-rootless.sh", "containerd-rootless-setuptool.sh")
NERDCTL_ARCHES = ("amd64", "arm64", "arm-v7", "ppc64le", "riscv64", "s390x")
FULL_ARCHES = ("amd64", "arm64")
BUILDKIT_ARCHES = ("amd64", "arm64", "arm-v7", "s390x", "ppc64le", "riscv64")
QEMU_TARGETS = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm-v7": "arm",
    "s390x": "s390x",
    "ppc64le": "ppc64le",
    "riscv64": "riscv64",
}
FAULTS = ("404", "500", "truncated", "html", "wrong-bytes", "slow")
SLOW_SECONDS = 6


def nerdctl_path(version: str, asset: str) -> str:
    return f"/containerd/nerdctl/releases/download/v{version}/{asset}"


def buildkit_path(version: str, asset: str) -> str:
    return f"/moby/buildkit/releases/download/v{version}/{asset}"


def nerdctl_asset(version: str, arch: str, full: bool = False) -> str:
    return f"nerdctl-{'full-' if full else ''}{version}-linux-{arch}.tar.gz"


def buildkit_asset(version: str, arch: str) -> str:
    return f"buildkit-v{version}.linux-{arch}.tar.gz"


# What each Python stand-in prints for --version, exactly as upstream does.
VERSION_LINES = {
    "nerdctl": "nerdctl version {version}",
    "buildkitd": "buildkitd github.com/moby/buildkit v{version} {revision}",
    "buildctl": "buildctl github.com/moby/buildkit v{version} {revision}",
    "containerd": "containerd github.com/containerd/containerd/v2 v{version} {revision}",
}
PYTHON_MARKER = "# --- python ---"


def _standin(name: str, version: str, release: str, arch: str) -> bytes:
    """A stand-in executable: ``--version`` answered by the shell (as fast as a Go binary), the rest in Python."""
    revision = hashlib.sha1(f"{release}-{version}".encode()).hexdigest()
    values = {"@VERSION@": version, "@REVISION@": revision, "@NAME@": name, "@RELEASE@": release}
    if name not in VERSION_LINES:
        text = (STANDINS / "generic").read_text()
    else:
        version_line = VERSION_LINES[name].format(version=version, revision=revision)
        python = (STANDINS / name).read_text().split("\n", 1)[1]
        text = (
            "#!/bin/sh\n"
            f'if [ "$1" = "--version" ]; then echo "{version_line}"; exit 0; fi\n'
            f'exec python3 -c "$(sed \'1,/^{PYTHON_MARKER}$/d\' "$0")" "$@"\n'
            f"{PYTHON_MARKER}\n{python}"
        )
    for key, value in values.items():
        text = text.replace(key, value)
    return f"{text}# stand-in built for linux/{arch}\n".encode()


def _executable(name: str, version: str, release: str, arch: str) -> bytes:
    """nerdctl's real rootless script where there is one, else a stand-in."""
    if name in ROOTLESS_SCRIPTS and (REAL_ROOTLESS / name).is_file():
        return (REAL_ROOTLESS / name).read_bytes()
    return _standin(name, version, release, arch)


def real_rootless_scripts() -> bool:
    """Whether the archives carry nerdctl's real rootless scripts."""
    return all((REAL_ROOTLESS / name).is_file() for name in ROOTLESS_SCRIPTS)


# The benchmark's archives of real size: stand-ins padded with incompressible bytes (archive kind to bytes).
_PADDED_SIZES: dict[str, int] = {}
_PADDED_ARCH: list[str] = []


def pad_archives(nerdctl: int = 0, buildkit: int = 0, full: int = 0, arch: str = "amd64") -> None:
    """Make the stand-in archives for ``arch`` built from now on about this many bytes (0: as small as they are).

    The padding is random bytes after an ``exit`` at the end of the helper executables
    (the rootless scripts, ``buildkit-qemu-*``, ``runc`` and the like), so gzip cannot
    shrink it and the binaries that report versions stay as they are.
    """
    _PADDED_SIZES.update(nerdctl=nerdctl, buildkit=buildkit, full=full)
    _PADDED_ARCH[:] = [arch]
    for builder in (nerdctl_archive, full_archive, buildkit_archive):
        builder.cache_clear()


def _archive(kind: str, arch: str, members: dict) -> bytes:
    """The .tar.gz of ``members``, padded to the wanted size of an archive of ``kind`` (random bytes
    need no hard compression: they stay as large either way)."""
    wanted = _PADDED_SIZES.get(kind, 0) if arch in _PADDED_ARCH else 0
    helpers = sorted(
        name for name, (data, mode) in members.items() if mode == 0o755 and data.startswith(b"#!/bin/sh\n# Stand-in")
    )
    small = _tar_gz(members)
    missing = wanted - len(small)
    if missing <= 0:
        return small
    padded = dict(members)
    if not helpers:  # every executable is real or reports a version: the padding gets a file of its own
        helpers = ["bench-padding"]
        padded["bench-padding"] = (b"#!/bin/sh\n# Stand-in padding for the benchmark\n", 0o755)
    for name in helpers:
        noise = random.Random(f"{kind}/{name}/{len(members)}").randbytes(missing // len(helpers))
        padded[name] = (padded[name][0] + b"exit 0\n" + noise, 0o755)
    return _tar_gz(padded, level=1)


@dataclass(frozen=True)
class Symlink:
    """A symbolic link member of an archive (upstream's full archive has some)."""

    target: str


def _tar_gz(members: dict[str, tuple[bytes, int]], level: int = 9) -> bytes:
    """A reproducible .tar.gz: fixed mtimes and owners, so its hash is stable."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        directories = sorted({str(Path(name).parents[i]) for name in members for i in range(len(Path(name).parts) - 1)})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(info)
        for name, (data, mode) in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 1700000000
            if isinstance(data, Symlink):
                info.type, info.linkname = tarfile.SYMTYPE, data.target
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=level, mtime=0)


@cache
def nerdctl_archive(version: str, arch: str) -> bytes:
    names = ("nerdctl", "containerd-rootless.sh", "containerd-rootless-setuptool.sh")
    return _archive("nerdctl", arch, {name: (_executable(name, version, "nerdctl", arch), 0o755) for name in names})


FULL_BINARIES = (
    "nerdctl",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "buildctl",
    "buildkitd",
    "rootlesskit",
    "rootlessctl",
    "slirp4netns",
    "tini",
    "containerd-rootless.sh",
    "containerd-rootless-setuptool.sh",
)
FULL_UNITS = ("containerd.service", "buildkit.service", "stargz-snapshotter.service")
ODD_MEMBER = "share/doc/nerdctl-full/odd names/read me *.txt"
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "firewall", "tuning")  # upstream ships more


def full_component_versions(version: str) -> dict[str, str]:
    """Component versions that the stand-in full archive claims to carry (containerd moves with nerdctl)."""
    return {
        "nerdctl": f"v{version}",
        "containerd": f"v2.1.{version.split('.')[-1]}",
        "runc": "v1.3.0",
        "BuildKit": "v0.23.2",
        "CNI plugins": "v1.7.1",
    }


@cache
def full_archive(version: str, arch: str) -> bytes:
    components = full_component_versions(version)
    members = {}
    for name in FULL_BINARIES:
        component_version = {
            "buildctl": components["BuildKit"],
            "buildkitd": components["BuildKit"],
            "containerd": components["containerd"],
        }.get(name, f"v{version}")[1:]
        members[f"bin/{name}"] = (_executable(name, component_version, "nerdctl-full", arch), 0o755)
    for unit in FULL_UNITS:
        members[f"lib/systemd/system/{unit}"] = (_archive_unit(unit), 0o644)
    for plugin in CNI_PLUGINS:
        members[f"libexec/cni/{plugin}"] = (_standin(plugin, components["CNI plugins"][1:], "cni", arch), 0o755)
    for plugin in ("bridge", "firewall", "host-local", "loopback"):
        members[f"bin/buildkit-cni-{plugin}"] = (Symlink(f"../libexec/cni/{plugin}"), 0o777)
    readme = (
        f"# nerdctl (full distribution)\n- nerdctl: {components['nerdctl']}\n"
        + "".join(f"- {name}: {value}\n" for name, value in components.items() if name != "nerdctl")
        + "\n## License\n- bin/slirp4netns:    [GNU GENERAL PUBLIC LICENSE, Version 2](https://example.invalid)\n"
    )
    members["share/doc/nerdctl-full/README.md"] = (readme.encode(), 0o644)
    # Not upstream's: a member whose folder and name hold spaces and a *, which the install takes as one name.
    members[ODD_MEMBER] = (b"one file, one name\n", 0o644)
    sums = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, (data, _) in sorted(members.items())
        if not isinstance(data, Symlink)
    )
    members["share/doc/nerdctl-full/SHA256SUMS"] = (sums.encode(), 0o644)
    return _archive("full", arch, members)


def _archive_unit(unit: str) -> bytes:
    """The archive's own units, as upstream ships them (buildkit.service starts eagerly, no socket)."""
    binary = {"buildkit.service": "buildkitd", "containerd.service": "containerd"}.get(unit, "containerd-stargz-grpc")
    return (
        f"[Unit]\nDescription={binary} (from the nerdctl-full archive)\nAfter=network.target local-fs.target\n\n"
        f"[Service]\nExecStart=/usr/local/bin/{binary}\nType=notify\nDelegate=yes\nKillMode=process\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ).encode()


@cache
def buildkit_archive(version: str, arch: str) -> bytes:
    names = ["buildctl", "buildkitd", "buildkit-runc"]
    names += [f"buildkit-qemu-{target}" for a, target in QEMU_TARGETS.items() if a != arch]
    if _version_tuple(version) >= (0, 13):
        names += [f"buildkit-cni-{plugin}" for plugin in ("bridge", "firewall", "host-local", "loopback")]
    members = {f"bin/{name}": (_standin(name, version, "buildkit", arch), 0o755) for name in names}
    if version == UNRUNNABLE_BUILDKIT:
        members["bin/buildkitd"] = (UNRUNNABLE_BINARY, 0o755)
    return _archive("buildkit", arch, members)


# A release whose buildkitd cannot run on the test hosts, as a Go binary built for a newer CPU level fails.
UNRUNNABLE_BUILDKIT = "0.13.99"
UNRUNNABLE_BINARY = (
    b"#!/bin/sh\necho 'This program can only be run on AMD64 processors with v3 microarchitecture support.' >&2\n"
    b"exit 1\n"
)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("-")[0].split(".")[:3])


def nerdctl_sums(version: str) -> bytes:
    lines = [f"{sha256(nerdctl_archive(version, arch))}  {nerdctl_asset(version, arch)}" for arch in NERDCTL_ARCHES]
    lines += [
        f"{sha256(full_archive(version, arch))}  {nerdctl_asset(version, arch, full=True)}" for arch in FULL_ARCHES
    ]
    return ("\n".join(sorted(lines, key=lambda line: line.split()[1])) + "\n").encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The test key that signs every SHA256SUMS the mirror serves (a release manager's key upstream).
SIGNER = "pyinfra-nerdctl test release manager <release@example.invalid>"


@cache
def _signer_home() -> Path:
    """A GNUPGHOME holding the test key, made on first use (ed25519, no passphrase: a few ms)."""
    home = tempfile.mkdtemp(prefix="mirror-gpg-")
    atexit.register(_forget_signer, home)
    gpg(home, "--passphrase", "", "--quick-gen-key", SIGNER, "ed25519", "sign", "never")
    return Path(home)


def _forget_signer(home: str) -> None:
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def gpg(home: str | Path, *arguments: str, data: bytes = b"") -> bytes:
    """gpg's output for ``arguments`` with ``home`` as its GNUPGHOME (never the user's)."""
    return subprocess.run(
        ["gpg", "--batch", "--quiet", "--homedir", str(home), *arguments], input=data, capture_output=True, check=True
    ).stdout


def signer_public_key() -> bytes:
    """The test key, armored, as an operator's ``nerdctl_gpg_keyring`` file holds it."""
    return gpg(_signer_home(), "--armor", "--export")


@cache
def nerdctl_sums_signature(version: str) -> bytes:
    """``SHA256SUMS.asc``: the test key's armored detached signature of the release's SHA256SUMS."""
    return gpg(_signer_home(), "--armor", "--detach-sign", data=nerdctl_sums(version))


def provenance_asset(version: str, arch: str) -> str:
    return f"buildkit-v{version}.linux-{arch}.provenance.json"


def provenance_path(version: str, arch: str) -> str:
    return buildkit_path(version, provenance_asset(version, arch))


def provenance(version: str, arch: str, subjects: dict[str, str] | None = None) -> bytes:
    """BuildKit's ``.provenance.json`` for the archive: a bare in-toto statement, indented as BuildKit writes it.

    Releases built by a BuildKit before v0.31 carry Statement v0.1 with a SLSA v0.2 predicate,
    later ones Statement v1 with SLSA v1 (the predicate here keeps the shape, not all of it).
    ``subjects`` (name to SHA-256) replaces the archive, for a statement that names other bytes.
    """
    asset = buildkit_asset(version, arch)
    subjects = subjects or {asset: sha256(buildkit_archive(version, arch))}
    subject = [{"name": name, "digest": {"sha256": digest}} for name, digest in subjects.items()]
    source = {"uri": "https://github.com/moby/buildkit.git", "digest": {"sha1": "0" * 40}}
    if _version_tuple(version) < (0, 31):
        statement = {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://slsa.dev/provenance/v0.2",
            "subject": subject,
            "predicate": {
                "builder": {"id": ""},
                "buildType": "https://mobyproject.org/buildkit@v1",
                "materials": [source],
                "invocation": {
                    "configSource": {"entryPoint": "Dockerfile"},
                    "environment": {"platform": f"linux/{arch.replace('-', '/')}"},
                },
                "metadata": {"completeness": {"parameters": True}, "reproducible": False},
            },
        }
    else:
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": subject,
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {
                "buildDefinition": {
                    "buildType": "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md",
                    "externalParameters": {"configSource": {"uri": source["uri"], "path": "Dockerfile"}},
                    "resolvedDependencies": [source],
                },
                "runDetails": {"builder": {"id": ""}, "metadata": {"invocationID": "x"}},
            },
        }
    return json.dumps(statement, indent=2).encode()


def content_for(path: str) -> bytes | None:
    """The bytes github.com would serve at ``path``, or None for a 404."""
    parts = path.strip("/").split("/")
    if len(parts) != 6 or parts[2:4] != ["releases", "download"] or not parts[4].startswith("v"):
        return None
    repo, version, asset = "/".join(parts[:2]), parts[4][1:], parts[5]
    try:
        _version_tuple(version)
    except ValueError:
        return None
    if repo == "containerd/nerdctl":
        if asset == "SHA256SUMS":
            return nerdctl_sums(version)
        if asset == "SHA256SUMS.asc" and shutil.which("gpg"):
            return nerdctl_sums_signature(version)
        for arch in NERDCTL_ARCHES:
            if asset == nerdctl_asset(version, arch):
                return nerdctl_archive(version, arch)
        for arch in FULL_ARCHES:
            if asset == nerdctl_asset(version, arch, full=True):
                return full_archive(version, arch)
    if repo == "moby/buildkit":
        for arch in BUILDKIT_ARCHES:
            if asset == buildkit_asset(version, arch):
                return buildkit_archive(version, arch)
            if asset == provenance_asset(version, arch) and _version_tuple(version) >= (0, 11):
                return provenance(version, arch)
    return None


@dataclass
class Mirror:
    """A running mirror: its base URL, what it served, and the faults to inject."""

    url: str = ""
    requests: list[tuple[str, int, int]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)
    faults: dict[str, str] = field(default_factory=dict)
    extra: dict[str, bytes] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    def serve(self, path: str, data: bytes) -> None:
        """Serve ``data`` at ``path`` too (a real release archive at its upstream path)."""
        self.extra[path] = data

    def fail(self, fault: str, path_contains: str = "") -> None:
        """Answer every request whose path contains ``path_contains`` with ``fault``."""
        assert fault in FAULTS, fault
        self.faults[path_contains] = fault

    def heal(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        """No faults, and an empty log: each test sees only its own requests."""
        self.heal()
        self.requests.clear()
        self.started.clear()
        self.user_agents.clear()

    def fetched(self, path_contains: str = "") -> list[str]:
        """Paths served successfully (status 200) whose path contains ``path_contains``."""
        return [path for path, status, _ in self.requests if status == 200 and path_contains in path]

    def fault_for(self, path: str) -> str | None:
        for needle, fault in self.faults.items():
            if needle in path:
                return fault
        return None

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def _answer(self, with_body: bool) -> None:
            path = self.path.split("?")[0]
            mirror.started.append(path)
            mirror.user_agents.append(self.headers.get("User-Agent", ""))
            body = mirror.extra.get(path) or content_for(path)
            status, length = 200, None
            fault = mirror.fault_for(path)
            if fault == "404" or body is None:
                status, body = 404, b"Not Found"
            elif fault == "500":
                status, body = 500, b"Internal Server Error"
            elif fault == "html":
                body = b"<!DOCTYPE html><html><body>Please log in</body></html>\n"
            elif fault == "wrong-bytes":
                body = bytes(reversed(body))
            elif fault == "truncated":
                length, body = len(body), body[: len(body) // 2]
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if fault == "html" else "application/octet-stream")
            self.send_header("Content-Length", str(length if length is not None else len(body)))
            self.end_headers()
            if fault == "slow":
                time.sleep(SLOW_SECONDS)
            if with_body:
                self.wfile.write(body)
            mirror.requests.append((path, status, len(body) if with_body else 0))
            if fault == "truncated":
                self.close_connection = True

    return Handler


def start_mirror(address: str = "127.0.0.1") -> Mirror:
    """Serve the mirror on ``address`` (a free port) in a background thread."""
    mirror = Mirror()
    server = ThreadingHTTPServer((address, 0), _handler(mirror))
    server.daemon_threads = True
    mirror.server = server
    mirror.url = f"http://{address}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return mirror
