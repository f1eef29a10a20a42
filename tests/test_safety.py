"""Bad input, faults, removal and permissions: a host ends converged or exactly as it was."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import mirror as mirror_module
import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, boot_build_host, boot_containerd_host, client_call, deploy, plan, unit_state
from pyinfra_cli import PYINFRA, run_pyinfra, write_inventory
from pyinfra_nerdctl.layout import LOCK_FILE

pytestmark = pytest.mark.hosts

STATE_PATHS = (
    "/usr/local/bin /etc/nerdctl /etc/buildkit /etc/systemd/system/buildkit.* /etc/profile.d /var/lib/pyinfra-nerdctl"
)


NERDCTL_SHA256 = mirror_module.sha256(mirror_module.nerdctl_archive("2.4.0", "amd64"))


def host_state(host: testhosts.TestHost) -> dict[str, object]:
    """Everything a deploy could touch: file contents and modes, leftovers, unit state."""
    files = host.run(
        # The work and upload folders are scratch space (their mtimes move); what they hold is "leftovers".
        f"find {STATE_PATHS} -maxdepth 1 2>/dev/null | grep -v -e '/work$' -e '/uploads$' | sort | "
        'while read -r f; do printf \'%s %s \' "$f" "$(stat -c \'%a %U:%G %Y\' "$f")"; '
        'if [ -f "$f" ]; then sha256sum < "$f"; else echo; fi; done'
    ).stdout
    leftovers = host.run(
        "ls -d /tmp/.pyinfra-nerdctl* /tmp/tmp.* /var/lib/pyinfra-nerdctl/work/* /var/lib/pyinfra-nerdctl/uploads/* "
        "2>/dev/null || true"
    ).stdout
    return {
        "files": files,
        "leftovers": leftovers,
        "socket": unit_state(host, "buildkit.socket"),
        "service": unit_state(host, "buildkit.service"),
        "groups": host.run("getent group | cut -d: -f1 | sort").stdout,
    }


def converged_host(boot_hosts, mirror, image=testhosts.TRIXIE_CONTAINERD, **data):
    """A host on nerdctl 2.4.0 and BuildKit 0.12.5, its buildkitd running."""
    host = boot_build_host(boot_hosts, image)
    hosts = inventory([host], **deploy_data(mirror), **data)
    deploy(hosts, {})
    client_call(host)
    return host, hosts


BAD_INPUTS = [
    ({"nerdctl_version": "latest!"}, "nerdctl_version='latest!' is not a release version"),
    ({"nerdctl_version": ""}, "nerdctl_version='' is not a release version"),
    ({"buildkit_version": "1.2.3.4.5"}, "buildkit_version='1.2.3.4.5' is not a release version"),
    ({"buildkit_sha256": "12ab"}, "buildkit_sha256='12ab' is not a SHA-256"),
    (
        {"buildkit_version": "0.10.8", "buildkit_sha256": None},  # before v0.11: no provenance
        "not in the shipped checksum table and its provenance cannot be read",
    ),
    ({"bin_dir": "usr/local/bin"}, "bin_dir='usr/local/bin' must be an absolute path"),
    ({"containerd_address": "tcp://127.0.0.1:1234"}, "containerd_address='tcp://127.0.0.1:1234' must be a socket path"),
    ({"buildkit_socket_group": "Build Ers"}, "buildkit_socket_group='Build Ers' is not a valid group name"),
    ({"host_lock_wait": "soon"}, "host_lock_wait='soon' is not a whole number of seconds"),
]


def test_bad_input_is_refused_and_the_host_is_untouched(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    before = host_state(host)
    base = hosts[0][1]

    for change, message in BAD_INPUTS:
        data = {key: value for key, value in {**base, **change}.items() if value is not None}
        run = run_pyinfra([(host.name, data)], DEPLOY)
        assert run.returncode != 0, change
        assert f"{host.name}: " in run.output and message in run.output, run.output
        assert host_state(host) == before, change

    # Faults found only on the host: a version the mirror lacks, a wrong pin, an unwritable bin_dir.
    for change, message in (
        ({"nerdctl_version": "9.9.9"}, "/v9.9.9/SHA256SUMS answered HTTP 404"),
        ({"nerdctl_version": "2.4.1", "buildkit_version": "9.9.9"}, "download of"),
        ({"nerdctl_version": "2.4.1", "buildkit_version": "0.13.0", "buildkit_sha256": "0" * 64}, "SHA-256 mismatch"),
        ({"bin_dir": "/proc/pyinfra-bin"}, "cannot create bin_dir /proc/pyinfra-bin"),
    ):
        mirror.fail("404", "v9.9.9")
        run = run_pyinfra([(host.name, {**base, **change})], DEPLOY)
        assert run.returncode != 0 and message in run.output, run.output
        assert host_state(host) == before, change

    # The same faults on a fresh host, which the host downloads itself: not even this package's folders stay.
    fresh = boot_containerd_host(boot_hosts)
    before = host_state(fresh)
    for change, message in (
        ({"buildkit_sha256": "0" * 64}, "SHA-256 mismatch"),
        ({"buildkit_version": "9.9.9"}, "download of"),
        ({"github_url": "http://127.0.0.1:9", "nerdctl_sha256": NERDCTL_SHA256}, "download of"),  # no server there
    ):
        run = run_pyinfra(inventory([fresh], **{**deploy_data(mirror), **change}), DEPLOY)
        assert run.returncode != 0 and message in run.output, run.output
        assert host_state(fresh) == before, change


def test_a_failed_run_on_a_fresh_host_leaves_nothing_when_the_controller_uploads(boot_hosts, mirror, tmp_path):
    fresh = boot_containerd_host(boot_hosts)
    before = host_state(fresh)
    controller = deploy_data(mirror, download_on_controller=True, release_cache_dir=str(tmp_path))
    for change, message in (
        # Found on the controller when the operation runs, after the nerdctl archive was fetched.
        ({"buildkit_sha256": "0" * 64}, "SHA-256 mismatch"),
        # Found on the host by the install, after both archives were uploaded.
        ({"bin_dir": "/proc/pyinfra-bin"}, "cannot create bin_dir /proc/pyinfra-bin"),
    ):
        run = run_pyinfra(inventory([fresh], **{**controller, **change}), DEPLOY)
        assert run.returncode != 0 and message in run.output, run.output
        assert host_state(fresh) == before, change
        assert fresh.run("test -e /var/lib/pyinfra-nerdctl", check=False).returncode == 1, change


def test_misspelt_key_warns_and_plain_http_warns(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    run = run_pyinfra([(host.name, {**hosts[0][1], "nerdctl_verison": "2.4.1"})], DEPLOY)
    assert run.returncode == 0, run.output
    assert "unknown setting 'nerdctl_verison' (did you mean nerdctl_version?)" in run.output
    assert f"github_url={mirror.url} is plain HTTP" in run.output
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"


@pytest.mark.parametrize("fault", ["500", "truncated", "html", "wrong-bytes"])
def test_mirror_faults_leave_the_host_unchanged_and_a_rerun_converges(boot_hosts, mirror, fault):
    host, hosts = converged_host(boot_hosts, mirror)
    before = host_state(host)
    upgrade = deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0")
    mirror.fail(fault, "buildkit-v0.13.0")

    failed = run_pyinfra(hosts, DEPLOY, data=upgrade)

    assert failed.returncode != 0
    assert "download of" in failed.output or "SHA-256 mismatch" in failed.output, failed.output
    assert host_state(host) == before
    mirror.heal()
    deploy(hosts, upgrade)
    assert client_call(host)["buildkitd.version"] == "0.13.0"
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.1\n"
    assert plan(hosts, upgrade) == {}


def test_wget_stands_in_for_curl_and_neither_is_a_clear_error(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    host.run("rm /usr/bin/curl")
    hosts = inventory([host], **deploy_data(mirror))
    deploy(hosts, {})
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"
    assert any(agent.startswith("Wget") for agent in mirror.user_agents)

    host.run("rm /usr/bin/wget")
    before = host_state(host)
    run = run_pyinfra(hosts, DEPLOY, data={"nerdctl_version": "2.4.1"})
    assert run.returncode != 0 and "neither curl nor wget is installed" in run.output, run.output
    assert host_state(host) == before


def test_full_temporary_disk_leaves_the_host_unchanged(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    before = host_state(host)
    host.run("mount -t tmpfs -o size=4k,mode=0700 tmpfs /var/lib/pyinfra-nerdctl/work")

    run = run_pyinfra(hosts, DEPLOY, data=deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0"))

    assert run.returncode != 0 and "download of" in run.output, run.output
    host.run("umount /var/lib/pyinfra-nerdctl/work")
    assert host_state(host) == before
    deploy(hosts, deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0"))
    assert client_call(host)["buildkitd.version"] == "0.13.0"


def _host_pids(host: testhosts.TestHost, *cmdline_starts: str) -> list[int]:
    """PIDs of the host's processes whose command line starts with one of ``cmdline_starts``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cgroup = open(f"/proc/{entry}/cgroup").read()
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"/{testhosts.MACHINE_PREFIX}{host.name}/" in cgroup and cmdline.startswith(cmdline_starts):
            pids.append(int(entry))
    return pids


# Debian 11's systemd 247 reports whole seconds, which the recovery from a cut run must cope with.
RECOVERY_IMAGES = pytest.mark.parametrize(
    "image", [testhosts.TRIXIE_CONTAINERD, testhosts.BULLSEYE], ids=["trixie", "debian11"]
)


@RECOVERY_IMAGES
def test_ssh_cut_during_download_ends_old_or_new_and_rerun_converges(boot_hosts, mirror, tmp_path, image):
    host, hosts = converged_host(boot_hosts, mirror, image)
    before = host_state(host)
    upgrade = deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0")
    mirror.fail("slow", "buildkit-v0.13.0")
    command = [PYINFRA, "-y", str(write_inventory(tmp_path, hosts)), DEPLOY]
    command[2:2] = [f"--data={key}={value}" for key, value in upgrade.items()]
    seen = len(mirror.started)
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not any("buildkit-v0.13.0" in path for path in mirror.started[seen:]):
        assert time.monotonic() < deadline and run.poll() is None, run.communicate()[0]
        time.sleep(0.05)

    sessions = _host_pids(host, "sshd: root@", "sshd-session: root@")
    assert sessions
    for pid in sessions:
        os.kill(pid, signal.SIGKILL)
    output = run.communicate(timeout=120)[0]

    assert run.returncode != 0, output
    mirror.heal()
    deadline = time.monotonic() + 30
    while _host_pids(host, "curl") and time.monotonic() < deadline:
        time.sleep(0.2)
    # The install script can outlive its connection and is still unpacking: it holds the host's lock until it ends.
    host.run(f"flock -w 60 {LOCK_FILE} true")
    after = host_state(host)
    nerdctl = host.run("/usr/local/bin/nerdctl --version").stdout
    buildkitd = host.run("/usr/local/bin/buildkitd --version").stdout.split()[2]
    assert (nerdctl, buildkitd) in (("nerdctl version 2.4.0\n", "v0.12.5"), ("nerdctl version 2.4.1\n", "v0.13.0"))
    assert not after["leftovers"] and ".pyinfra-nerdctl." not in after["files"]
    if buildkitd == "v0.12.5":
        assert after == before
    deploy(hosts, upgrade)
    assert plan(hosts, upgrade) == {}
    assert client_call(host)["buildkitd.version"] == "0.13.0"


# Fault injection, not a stand-in: the third `mv` of the install kills the install script,
# as a power cut or an OOM kill would halfway through moving files into place.
KILLING_MV = """#!/bin/sh
count=$(( $(cat /run/mv-calls 2>/dev/null || echo 0) + 1 ))
echo $count > /run/mv-calls
if [ $count -eq 3 ]; then kill -KILL $PPID; exit 1; fi
exec /usr/bin/mv "$@"
"""


@RECOVERY_IMAGES
def test_install_killed_during_the_moves_reports_the_old_version_and_rerun_converges(boot_hosts, mirror, image):
    host, hosts = converged_host(boot_hosts, mirror, image)
    host.run(f"cat > /usr/local/sbin/mv <<'EOF'\n{KILLING_MV}EOF\nchmod 755 /usr/local/sbin/mv")
    upgrade = deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0")

    killed = run_pyinfra(hosts, DEPLOY, data=upgrade)

    assert killed.returncode != 0
    # Not only pyinfra's "executed 0 commands": what was killed, and what that left.
    assert "the install into /usr/local/bin was killed by signal KILL: the files it had not moved yet" in killed.output
    assert host.run("cat /run/mv-calls").stdout == "3\n"
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"
    assert host.run("/usr/local/bin/buildkitd --version").stdout.split()[2] == "v0.12.5"
    assert ".pyinfra-nerdctl." in host.run("ls -a /usr/local/bin").stdout  # what the killed script left
    host.run("rm /usr/local/sbin/mv")
    deploy(hosts, upgrade)
    after = host_state(host)
    assert not after["leftovers"] and ".pyinfra-nerdctl." not in after["files"]
    assert client_call(host)["buildkitd.version"] == "0.13.0"
    assert plan(hosts, upgrade) == {}


def test_unsupported_architecture_is_refused_before_anything_is_written(boot_hosts, mirror):
    (host,) = boot_hosts(1, extra_args=("--personality=x86",))
    assert host.run("uname -m").stdout.strip() == "i686"
    before = host_state(host)

    run = run_pyinfra(inventory([host], **deploy_data(mirror)), DEPLOY)

    assert run.returncode != 0
    assert f"{host.name}: architecture 'i686' is not shipped by nerdctl 2.4.0" in run.output, run.output
    assert host_state(host) == before


def test_host_without_systemd_is_refused_before_anything_is_written(boot_hosts, mirror):
    (host,) = boot_hosts(1, systemd=False)
    listing = host.run("find /usr/local /etc -newer /etc/os-release 2>/dev/null | sort").stdout

    run = run_pyinfra(inventory([host], **deploy_data(mirror)), DEPLOY)

    assert run.returncode != 0
    assert f"{host.name}: systemd is not the running init system" in run.output, run.output
    assert host.run("find /usr/local /etc -newer /etc/os-release 2>/dev/null | sort").stdout == listing


def test_one_host_down_and_one_failing_leave_the_other_three_converged(boot_hosts, mirror):
    hosts = boot_hosts(5, image=testhosts.TRIXIE_CONTAINERD)
    entries = inventory(hosts, **deploy_data(mirror))
    entries[3][1]["buildkit_sha256"] = "0" * 64
    testhosts.stop(hosts[1])

    run = run_pyinfra(entries, DEPLOY, as_json=True, extra_args=("--fail-percent", "100"))

    assert run.returncode != 0
    assert set(run.json["results"]["failed_hosts"]) >= {hosts[3].name}
    assert hosts[1].name in run.output and hosts[3].name in run.output
    for host in (hosts[0], hosts[2], hosts[4]):
        assert client_call(host)["buildkitd.version"] == "0.12.5"
    assert not hosts[3].run("ls /usr/local/bin").stdout


def test_socket_group_can_reach_buildkit_and_others_cannot(boot_hosts, mirror):
    host, _ = converged_host(boot_hosts, mirror, buildkit_socket_group="builders")
    user = testhosts.OPERATOR
    as_user = f"su {user} -c '/usr/local/bin/buildctl debug workers'"

    denied = host.run(as_user, check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr

    host.run(f"usermod -a -G builders {user}")
    assert "containerd" in host.run(as_user).stdout
    assert host.run(
        "stat -c '%a %U:%G' /run/buildkit/buildkitd.sock /etc/buildkit /etc/buildkit/buildkitd.toml"
    ).stdout == ("660 root:builders\n755 root:root\n644 root:root\n")


def test_dry_run_plans_exactly_what_the_run_changes(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host], **deploy_data(mirror))
    for data in ({}, {}, deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0")):
        client_call(host) if data else None
        before = host_state(host)
        planned = plan(hosts, data)
        assert host_state(host) == before  # --dry changes nothing
        run = run_pyinfra(hosts, DEPLOY, data=data, as_json=True)
        assert run.returncode == 0, run.output
        assert run.changes_made() == planned


def test_removal_takes_everything_but_data_unless_purged(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror, buildkit_socket_group="builders", nerdctl_docker_alias=True)
    host.run("mkdir -p /var/lib/buildkit && echo cache > /var/lib/buildkit/cache")

    removal = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_build_host", as_json=True)

    assert removal.returncode == 0, removal.output
    assert [name for name in removal.changes_made()[host.name] if "Reload" in name] == [
        "Remove the nerdctl and BuildKit build host | Reload systemd units"
    ]
    assert host.run("ls -A /usr/local/bin /etc/systemd/system | grep -c . || true").stdout.strip() != ""
    assert not host.run("ls -A /usr/local/bin").stdout
    for path in (
        "/etc/nerdctl",
        "/etc/buildkit",
        "/etc/systemd/system/buildkit.socket",
        "/etc/profile.d/nerdctl-docker-alias.sh",
        "/var/lib/pyinfra-nerdctl/buildkit-good",
    ):
        assert host.run(f"test -e {path}", check=False).returncode == 1, path
    assert unit_state(host, "buildkit.socket")["ActiveState"] == "inactive"
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"
    assert host.run("cat /var/lib/buildkit/cache").stdout == "cache\n"
    again = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_build_host", as_json=True)
    assert again.returncode == 0 and again.json["results"]["totals"]["success"] == 0, again.output

    purge = run_pyinfra(hosts, "pyinfra_nerdctl.deploys.remove_build_host", "purge=true")
    assert purge.returncode == 0, purge.output
    assert host.run("test -e /var/lib/buildkit", check=False).returncode == 1


def test_a_full_bin_dir_is_one_line_naming_the_folder_and_the_room_before_unpacking(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    host.run("mkdir -p /opt/small && mount -t tmpfs -o size=64k tmpfs /opt/small")
    data = deploy_data(mirror, bin_dir="/opt/small/bin")

    run = run_pyinfra(hosts, DEPLOY, data=data)

    assert run.returncode != 0
    (line,) = [line for line in run.output.splitlines() if "not enough room" in line]
    assert re.search(
        r"not enough room in /opt/small/bin to unpack \S+[.]tar[.]gz: it needs [0-9.]+ MB, "
        r"0.[0-9] MB free; nothing was installed$",
        line,
    ), line
    assert "No space left on device" not in run.output
    assert host.run("ls -A /opt/small/bin").stdout == ""


# What killed runs leave (a partial upload, a scratch folder, an unpack folder, a partial copy of the check).
KILLED_RUN_LEFTOVERS = (
    "/var/lib/pyinfra-nerdctl/uploads/" + "ab" * 32 + ".0123456789abcdef",
    "/var/lib/pyinfra-nerdctl/work/Xy12Ab",
    "/usr/local/bin/.pyinfra-nerdctl.Qw34Er",
    "/var/lib/pyinfra-nerdctl/buildkit-good/_usr_local_bin_buildkitd.tmp",
)


def test_a_converged_rerun_removes_what_killed_runs_left_and_nothing_younger(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    young = "/var/lib/pyinfra-nerdctl/uploads/" + "cd" * 32 + ".fedcba9876543210"  # another run's, waiting for the lock
    host.run(
        "mkdir -p /var/lib/pyinfra-nerdctl/work/Xy12Ab /usr/local/bin/.pyinfra-nerdctl.Qw34Er/bin "
        "/var/lib/pyinfra-nerdctl/buildkit-good && "
        f"head -c 10M /dev/zero > {KILLED_RUN_LEFTOVERS[0]} && head -c 1M /dev/zero > {KILLED_RUN_LEFTOVERS[3]} && "
        f"touch /usr/local/bin/.pyinfra-nerdctl.Qw34Er/bin/nerdctl {young} && "
        f"touch -d '2 hours ago' {' '.join(KILLED_RUN_LEFTOVERS)}"
    )

    planned = plan(hosts, {})
    rerun = run_pyinfra(hosts, DEPLOY, as_json=True)

    assert planned == {host.name: ["Install the nerdctl and BuildKit build host | Remove what killed runs left"]}
    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 1, rerun.output
    left = host.run(f"ls -d {' '.join(KILLED_RUN_LEFTOVERS)} {young} 2>/dev/null || true").stdout.split()
    assert left == [young]
    again = run_pyinfra(hosts, DEPLOY, as_json=True)
    assert again.returncode == 0 and again.json["results"]["totals"]["success"] == 0, again.output


def test_a_copy_of_the_working_setup_cut_short_leaves_no_partial_file_and_the_run_succeeds(boot_hosts, mirror):
    host, hosts = converged_host(boot_hosts, mirror)
    good = "/var/lib/pyinfra-nerdctl/buildkit-good"
    host.run(f"mount -t tmpfs -o size=12k tmpfs {good}")  # room for the small files, not for buildkitd

    run = run_pyinfra(hosts, DEPLOY, data=deploy_data(mirror, buildkit_version="0.13.0"))

    assert run.returncode == 0, run.output
    kept = host.run(f"ls -A {good}").stdout.split()
    host.run(f"umount {good}")
    assert kept and not [name for name in kept if name.endswith(".tmp") or name.endswith("bin_buildkitd")], kept
    (line,) = [line for line in run.output.splitlines() if "could not keep a copy" in line]
    assert line.endswith(
        f"{host.name}: could not keep a copy of /usr/local/bin/buildkitd in {good} (full?): "
        "a later change BuildKit refuses cannot go back to it"
    ), line


def test_a_run_killed_during_a_controller_fetch_leaves_nothing_after_a_converged_rerun(boot_hosts, mirror, tmp_path):
    cache = tmp_path / "cache"
    host, hosts = converged_host(boot_hosts, mirror, download_on_controller=True, release_cache_dir=str(cache))
    upgrade = deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0")
    mirror.fail("slow", "buildkit-v0.13.0")
    command = [PYINFRA, "-y", str(write_inventory(tmp_path, hosts)), DEPLOY]
    command[2:2] = [f"--data={key}={value}" for key, value in upgrade.items()]
    seen = len(mirror.started)
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not list(cache.glob("*/.buildkit-v0.13.0.linux-amd64.tar.gz.*.partial")):
        assert time.monotonic() < deadline and run.poll() is None, run.communicate()[0]
        time.sleep(0.05)
    assert any("buildkit-v0.13.0" in path for path in mirror.started[seen:])
    run.kill()  # SIGKILL: no clean-up of its own
    run.communicate(timeout=30)
    mirror.heal()
    (partial,) = cache.glob("*/.buildkit-v0.13.0.linux-amd64.tar.gz.*.partial")
    assert partial.name.endswith(f".{run.pid}.partial")
    # Every archive is on the controller, verified, before anything reaches the host: not even nerdctl's, fetched first.
    assert host.run("ls -A /var/lib/pyinfra-nerdctl/uploads /var/lib/pyinfra-nerdctl/work").stdout.split() == [
        "/var/lib/pyinfra-nerdctl/uploads:",
        "/var/lib/pyinfra-nerdctl/work:",
    ]
    # A rerun at once keeps the controller's partial (a shared cache's other controller could be writing it).
    stale = time.time() - 120
    os.utime(partial, (stale, stale))

    rerun = run_pyinfra(hosts, DEPLOY, as_json=True)

    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output
    assert not list(cache.glob("*/.*.partial"))
