"""Real systemd test hosts: a cached debootstrap image booted with systemd-nspawn.

Every host is a systemd-nspawn container booted from one read-only base image
(``--volatile=overlay``), with sshd listening on its own loopback address. Hosts
run in their own cgroups, report readiness through a notify socket, and halt
when the test process dies. See ../shared/test-hosts.md for the measurements
this follows.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("PYINFRA_NERDCTL_TEST_CACHE", Path.home() / ".cache" / "pyinfra-nerdctl-tests"))
RUN_DIR = Path("/run/pyinfra-nerdctl-tests")


def _claim_slot() -> int:
    """The lowest test slot no other test process holds (held until this process ends).

    Each slot has its own hosts folder, machine names and loopback range, so that
    test sessions run side by side and reap only what their own slot left behind.
    """
    try:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
    except OSError:
        return 0  # not root: no hosts will boot anyway
    for slot in range(0, 100):
        lock = open(RUN_DIR / f"slot-{slot}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _SLOT_LOCKS.append(lock)
        return slot
    raise RuntimeError(f"every test slot under {RUN_DIR} is taken")


_SLOT_LOCKS: list = []
SLOT = _claim_slot()
MACHINE_PREFIX = "pnt-" if SLOT == 0 else f"pnt{SLOT}-"
HOSTS_DIR = RUN_DIR / ("hosts" if SLOT == 0 else f"hosts-{SLOT}")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
DEBIAN_MIRROR = os.environ.get("PYINFRA_NERDCTL_DEBIAN_MIRROR", "http://deb.debian.org/debian")

BASE_PACKAGES = "systemd,systemd-sysv,dbus,openssh-server,iproute2,ca-certificates,curl,wget,python3,sudo"
# A non-root login with password-less sudo, for `_sudo` deploys and socket permission tests.
OPERATOR = "operator1"
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "getty@tty1.service",
    "console-getty.service",
)


@dataclass(frozen=True)
class ImageRecipe:
    """What a base image holds; its hash names the cached tarball.

    With ``base``, the image is that image's tarball with ``setup`` run in a chroot
    of it (Debian's mirror reachable), which costs seconds where debootstrap costs a minute.
    """

    suite: str
    packages: str
    base: ImageRecipe | None = None
    setup: str = ""
    name: str = ""

    @property
    def key(self) -> str:
        recipe = (
            f"{self.base.key}|{self.setup}"
            if self.base
            else f"{self.suite}|{self.packages}|{'|'.join(MASKED_UNITS)}|v2"
        )
        return f"{self.name or self.suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def derived(base: ImageRecipe, name: str, setup: str) -> ImageRecipe:
    return ImageRecipe(base.suite, base.packages, base=base, setup=setup, name=name)


# bookworm: the plain systemd host. trixie: the one that ships a real containerd, and python3-venv for the
# README's quick start (`python3 -m venv`).
BOOKWORM = ImageRecipe("bookworm", BASE_PACKAGES)
TRIXIE_CONTAINERD = ImageRecipe("trixie", BASE_PACKAGES + ",containerd,runc,python3-venv,busybox-static")
# trixie with what rootless containerd needs from Debian (../shared/test-hosts.md, "Rootless").
TRIXIE_ROOTLESS = ImageRecipe(
    "trixie", TRIXIE_CONTAINERD.packages + ",rootlesskit,slirp4netns,uidmap,dbus-user-session,libpam-systemd,iptables"
)
# trixie with Debian's docker-buildx, run standalone (no docker daemon) as a remote builder's client.
TRIXIE_BUILDX = derived(
    TRIXIE_CONTAINERD,
    "trixie-buildx",
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-buildx >/dev/null && "
    "apt-get clean && rm -rf /var/lib/apt/lists/*",
)
BUILDX = "/usr/libexec/docker/cli-plugins/docker-buildx"
# trixie with a real registry (Debian's docker-registry, off until a test starts it): issue 22's mirrors.
TRIXIE_REGISTRY = derived(
    TRIXIE_CONTAINERD,
    "trixie-registry",
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-registry >/dev/null && "
    "systemctl disable docker-registry.service >/dev/null 2>&1 && apt-get clean && rm -rf /var/lib/apt/lists/*",
)
# Hosts that real fleets have (issue 15): systemd 247, whose timestamps are whole seconds;
# a German system locale, which SSH sessions pick up (pam_env); SSH sessions with umask 077 (pam_umask).
# Python 3.9 has no tomllib, which the stand-ins parse their configs with: a shim over Debian's python3-toml.
TOMLLIB_SHIM = """from toml import TomlDecodeError as TOMLDecodeError, loads as _loads


def loads(text):
    return _loads(text)


def load(handle):
    data = handle.read()
    return _loads(data.decode() if isinstance(data, bytes) else data)
"""
BULLSEYE = derived(
    ImageRecipe("bullseye", BASE_PACKAGES),
    "bullseye",
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-toml >/dev/null && "
    "apt-get clean && rm -rf /var/lib/apt/lists/* && "
    f"cat > /usr/lib/python3/dist-packages/tomllib.py <<'EOF'\n{TOMLLIB_SHIM}EOF\n",
)
BOOKWORM_GERMAN = derived(
    BOOKWORM,
    "bookworm-de",
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends locales >/dev/null && "
    "echo 'de_DE.UTF-8 UTF-8' > /etc/locale.gen && locale-gen >/dev/null && "
    "echo LANG=de_DE.UTF-8 > /etc/default/locale && apt-get clean && rm -rf /var/lib/apt/lists/*",
)
BOOKWORM_UMASK = derived(
    BOOKWORM,
    "bookworm-umask077",
    "sed -i 's/^UMASK.*/UMASK 077/' /etc/login.defs && "
    "echo 'session optional pam_umask.so umask=0077' >> /etc/pam.d/common-session",
)


def test_key() -> Path:
    """The ed25519 key every test host accepts for root (made once)."""
    key = CACHE_DIR / "id_ed25519"
    if not key.exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def image_dir(recipe: ImageRecipe) -> Path:
    """An unpacked base image for ``recipe``, built on first use (debootstrap, or from its base), then cached."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = _image_tarball(recipe)
    # The unpacked copy is named after this cache's key too: images from another cache accept another key.
    key_id = hashlib.sha256(test_key().with_suffix(".pub").read_bytes()).hexdigest()[:8]
    rootfs = RUN_DIR / "images" / f"{recipe.key}-{key_id}"
    with open(CACHE_DIR / f"{recipe.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (rootfs / "etc" / "os-release").exists():
            if rootfs.exists():
                shutil.rmtree(rootfs)
            rootfs.mkdir(parents=True)
            subprocess.run(_tar("-xf", tarball, rootfs), check=True)
    return rootfs


def _build_image(recipe: ImageRecipe, tarball: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={recipe.packages}",
                recipe.suite,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        _prepare_rootfs(rootfs)
        partial = tarball.with_suffix(".partial")
        subprocess.run(_tar("-cf", partial, rootfs, "."), check=True)
        partial.rename(tarball)


def _image_tarball(recipe: ImageRecipe) -> Path:
    """``recipe``'s cached tarball, built first if missing."""
    tarball = CACHE_DIR / f"{recipe.key}.tar.zst"
    with open(CACHE_DIR / f"{recipe.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            (_derive_image if recipe.base else _build_image)(recipe, tarball)
    return tarball


def _derive_image(recipe: ImageRecipe, tarball: Path) -> None:
    assert recipe.base is not None
    base = _image_tarball(recipe.base)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR) as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        subprocess.run(_tar("-xf", base, rootfs), check=True)
        resolv_conf = rootfs / "etc" / "resolv.conf"
        kept_resolv_conf = resolv_conf.read_bytes() if resolv_conf.is_file() else None
        resolv_conf.unlink(missing_ok=True)
        shutil.copy("/etc/resolv.conf", resolv_conf)
        subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
        try:
            subprocess.run(
                ["chroot", str(rootfs), "/bin/sh", "-ec", recipe.setup],
                check=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"},
            )
        finally:
            subprocess.run(["umount", str(rootfs / "proc")], check=True)
        resolv_conf.unlink()
        if kept_resolv_conf is not None:
            resolv_conf.write_bytes(kept_resolv_conf)
        partial = tarball.with_suffix(".partial")
        subprocess.run(_tar("-cf", partial, rootfs, "."), check=True)
        partial.rename(tarball)


def _tar(mode: str, tarball: Path, rootfs: Path, *members: str) -> list[str]:
    """tar that keeps root ownership, device files, xattrs and ACLs."""
    return [
        "tar",
        "--numeric-owner",
        "--xattrs",
        "--acls",
        "-I",
        "zstd",
        mode,
        str(tarball),
        "-C",
        str(rootfs),
        *members,
    ]


def _prepare_rootfs(rootfs: Path) -> None:
    ssh_dir = rootfs / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(test_key().with_suffix(".pub").read_text())
    subprocess.run(["chroot", str(rootfs), "useradd", "--create-home", "--shell", "/bin/bash", OPERATOR], check=True)
    operator_ssh = rootfs / "home" / OPERATOR / ".ssh"
    operator_ssh.mkdir(mode=0o700)
    shutil.copy(ssh_dir / "authorized_keys", operator_ssh / "authorized_keys")
    subprocess.run(
        ["chroot", str(rootfs), "chown", "-R", f"{OPERATOR}:{OPERATOR}", f"/home/{OPERATOR}/.ssh"], check=True
    )
    (rootfs / "etc" / "sudoers.d" / OPERATOR).write_text(f"{OPERATOR} ALL=(ALL) NOPASSWD: ALL\n")
    (rootfs / "etc" / "machine-id").write_text("")
    (rootfs / "etc" / "hostname").unlink(missing_ok=True)
    for unit in MASKED_UNITS:
        link = rootfs / "etc" / "systemd" / "system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (rootfs / "var" / "cache" / "apt" / "archives").mkdir(parents=True, exist_ok=True)
    for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()


# What a real build inside a host needs (../shared/real-buildkit/README.md): the unified cgroup
# hierarchy, containerd's snapshots (the k3s-like one's too) off the host's overlay, and the
# system calls runc makes. Options for ``boot``.
REAL_BUILDS = {
    "extra_args": (
        "--tmpfs=/var/lib/containerd",
        "--tmpfs=/var/lib/rancher",
        "--system-call-filter=@keyring bpf",
    ),
    "nspawn_env": {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
}


@dataclass
class TestHost:
    """One booted host: its name, loopback address and nspawn process."""

    name: str
    address: str
    process: subprocess.Popen
    workdir: Path
    _notify_thread: threading.Thread | None = field(default=None, repr=False)

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` on the host over SSH, as root."""
        result = subprocess.run(
            ["ssh", *ssh_options(), f"root@{self.address}", command],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name}: {command!r} exited {result.returncode}: {result.stderr}{result.stdout}")
        return result

    def commands_logged(self) -> int:
        """How many SSH commands sshd has started on this host, this one included (its VERBOSE log)."""
        return int(self.run("journalctl -q -u ssh.service -g 'Starting session: command' -o cat | wc -l").stdout)

    def inventory_data(self) -> dict:
        return {
            "ssh_hostname": self.address,
            "ssh_port": 22,
            "ssh_user": "root",
            "ssh_key": str(test_key()),
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "off",
        }


def ssh_options() -> list[str]:
    return [
        "-i",
        str(test_key()),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
    ]


def _libc_prctl_pdeathsig() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _cgroup_dirs(name: str) -> list[Path]:
    return [root / name for root in CGROUP_ROOTS if root.is_dir()]


def boot(
    name: str,
    address: str,
    rootfs: Path,
    extra_args: tuple[str, ...] = (),
    systemd: bool = True,
    nspawn_env: dict[str, str] | None = None,
) -> TestHost:
    """Boot one host from ``rootfs`` and return once its sshd answers.

    ``systemd=False`` runs sshd as the container's first process instead of booting
    systemd: a host whose init is not systemd. ``nspawn_env`` goes to systemd-nspawn
    (see ``REAL_BUILDS``).
    """
    workdir = HOSTS_DIR / name
    if workdir.exists():
        shutil.rmtree(workdir)
    sshd_dir = workdir / "sshd.d"
    sshd_dir.mkdir(parents=True)
    # LogLevel VERBOSE logs each command's session, so the benchmark can count them on the host.
    (sshd_dir / "test.conf").write_text(f"ListenAddress {address}:22\nUseDNS no\nMaxStartups 200\nLogLevel VERBOSE\n")
    cgroups = _cgroup_dirs(MACHINE_PREFIX + name)
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)

    notify_path = workdir / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    ready = threading.Event()

    def read_notify() -> None:
        # Keep draining: an unread notify socket blocks nspawn and hangs the guest.
        while True:
            try:
                message = notify.recv(4096)
            except OSError:
                return
            if not message:
                return
            if b"READY=1" in message.split(b"\n"):
                ready.set()

    def enter_cgroups() -> None:
        for cgroup in cgroups:
            (cgroup / "cgroup.procs").write_text("0")
        _libc_prctl_pdeathsig()

    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "NOTIFY_SOCKET": str(notify_path),
        **(nspawn_env or {}),
    }
    command = [
        "systemd-nspawn",
        "--quiet",
        "--register=no",
        "--keep-unit",
        f"--machine={MACHINE_PREFIX}{name}",
        f"--notify-ready={'yes' if systemd else 'no'}",
        "--console=read-only",
        "-D",
        str(rootfs),
        "--volatile=overlay",
        f"--bind-ro={sshd_dir}:/etc/ssh/sshd_config.d",
        *extra_args,
        *(["--boot"] if systemd else ["/bin/sh", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e"]),
    ]
    log = open(workdir / "console.log", "wb")
    process = subprocess.Popen(
        command, env=env, preexec_fn=enter_cgroups, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    (workdir / "pid").write_text(str(process.pid))
    thread = threading.Thread(target=read_notify, daemon=True)
    thread.start()
    host = TestHost(name, address, process, workdir, thread)
    deadline = time.monotonic() + 60
    while not ready.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(host)
            raise RuntimeError(
                f"host {name} did not boot: {(workdir / 'console.log').read_text(errors='replace')[-2000:]}"
            )
    _wait_for_sshd(address, deadline)
    notify.close()
    return host


def _wait_for_sshd(address: str, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection((address, 22), timeout=2) as conn:
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd on {address} did not answer")
        time.sleep(0.02)


def stop(host: TestHost) -> None:
    """Halt ``host`` cleanly, then kill whatever is left in its cgroups."""
    if host.process.poll() is None:
        host.process.send_signal(signal.SIGTERM)
        try:
            host.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            host.process.kill()
            host.process.wait()
    _reap_cgroups(MACHINE_PREFIX + host.name)
    shutil.rmtree(host.workdir, ignore_errors=True)


def _reap_cgroups(machine: str) -> None:
    for cgroup in _cgroup_dirs(machine):
        if not cgroup.exists():
            continue
        for _ in range(50):
            pids = _pids_below(cgroup)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for directory in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir_quietly(directory)
        _rmdir_quietly(cgroup)


def _pids_below(cgroup: Path) -> list[int]:
    pids = []
    for procs in cgroup.rglob("cgroup.procs"):
        try:
            pids += [int(line) for line in procs.read_text().split()]
        except OSError:
            pass
    return pids


def _rmdir_quietly(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:
        pass


def reap_leftovers() -> None:
    """Stop hosts that an earlier, crashed run left behind in this slot."""
    hosts_dir = HOSTS_DIR
    if hosts_dir.is_dir():
        for workdir in hosts_dir.iterdir():
            pid_file = workdir / "pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        time.sleep(0.3)
    for root in CGROUP_ROOTS:
        if root.is_dir():
            for cgroup in root.glob(MACHINE_PREFIX + "*"):
                _reap_cgroups(cgroup.name)
    if hosts_dir.is_dir():
        shutil.rmtree(hosts_dir, ignore_errors=True)
