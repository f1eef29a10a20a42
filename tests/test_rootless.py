"""Rootless build hosts on real software: Debian's containerd, RootlessKit and slirp4netns, nerdctl's
real rootless scripts and a real BuildKit archive, building as the user."""

from __future__ import annotations

import shlex
import threading

import mirror as mirror_module
import pytest
import testhosts
from conftest import deploy_data, inventory
from pyinfra_cli import run_pyinfra
from pyinfra_nerdctl.layout import LOCK_FILE

pytestmark = pytest.mark.hosts

INSTALL = "pyinfra_nerdctl.deploys.install_rootless"
REMOVE = "pyinfra_nerdctl.deploys.remove_rootless"
BUILD_HOST = "pyinfra_nerdctl.deploys.install_build_host"
# ../shared/test-hosts.md: runc needs the keyring calls; the snapshotter's upper layers cannot sit on the
# image's overlay, so home folders live on a tmpfs.
ROOTLESS_HOST = {
    "image": testhosts.TRIXIE_ROOTLESS,
    "extra_args": ("--system-call-filter=@keyring bpf", "--tmpfs=/home:mode=0755"),
}
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY hello.txt /hello.txt
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox tr a-z A-Z < /hello.txt > /shout.txt; /bin/busybox cat /proc/net/dev > /net.txt"]
"""


@pytest.fixture
def real_data(mirror, real_buildkit) -> dict:
    """Deploy data with the real BuildKit archive (pinned by its SHA-256) and nerdctl's real rootless scripts."""
    if not mirror_module.real_rootless_scripts():
        pytest.skip(f"nerdctl's real rootless scripts are not in {mirror_module.REAL_ROOTLESS}")
    return deploy_data(mirror, buildkit_version=real_buildkit.version, buildkit_sha256=real_buildkit.sha256)


def boot_rootless_host(boot_hosts, real_data) -> tuple[testhosts.TestHost, list]:
    (host,) = boot_hosts(1, **ROOTLESS_HOST)
    host.run("chmod 0666 /dev/net/tun")  # nspawn makes it root-only; slirp4netns opens it as the user
    hosts = inventory([host], **real_data)
    run = run_pyinfra(hosts, BUILD_HOST)
    assert run.returncode == 0, run.output
    return host, hosts


def uid_of(host, user: str) -> int:
    return int(host.run(f"id -u {user}").stdout)


def as_user(host, user: str, command: str, check: bool = True):
    """``command`` as ``user`` in a login-like environment (home folder, runtime folder, PATH)."""
    env = f"XDG_RUNTIME_DIR=/run/user/{uid_of(host, user)} PATH=/usr/local/bin:/usr/bin:/bin"
    return host.run(f"cd /home/{user} && runuser -u {user} -- env {env} sh -c {shlex.quote(command)}", check=check)


def build_as(host, user: str, tag: str) -> None:
    """A real build with COPY and RUN, as ``user``, with nothing but ``nerdctl build``."""
    as_user(
        host,
        user,
        f"mkdir -p ctx && cp /bin/busybox ctx/ && echo 'hello {user}' > ctx/hello.txt && "
        f"cat > ctx/Dockerfile <<'EOF'\n{DOCKERFILE}EOF\nnerdctl build -t {tag} ctx",
    )


def images_of(host, user: str, namespace: str = "default") -> set[str]:
    """The user's images, read through the setup tool's ``nsenter`` into the user's namespaces."""
    out = as_user(host, user, f"containerd-rootless-setuptool.sh nsenter -- ctr -n {namespace} images ls -q").stdout
    return set(out.split())


def invocation(host, user: str, unit: str) -> str:
    """The invocation ID of the user's ``unit``: a new one after each start."""
    return as_user(host, user, f"systemctl --user show -p InvocationID --value {unit}").stdout.strip()


def image_file(host, user: str, reference: str, name: str) -> str:
    """The content of ``name`` in the layers of the user's image ``reference`` (exported inside the namespaces)."""
    script = (
        f"rm -rf export && mkdir export && ctr -n default images export export/image.tar {reference} && "
        "tar -xf export/image.tar -C export && "
        f"for blob in export/blobs/sha256/*; do zcat -f $blob | tar -xO {name} 2>/dev/null; done; rm -rf export"
    )
    return as_user(host, user, f"containerd-rootless-setuptool.sh nsenter -- sh -c {shlex.quote(script)}").stdout


def interfaces(proc_net_dev: str) -> set[str]:
    """Interface names in ``/proc/net/dev``."""
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:]}


def rootless_state(hosts, user: str) -> dict:
    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.RootlessState", f"user={user}", as_json=True)
    (by_host,) = facts.json.values()  # keyed "pyinfra_nerdctl.facts.rootless.RootlessState (user=...)"
    return by_host[hosts[0][0]]


def deploy(hosts, operation: str, *arguments: str, **data) -> None:
    """``operation`` with keyword ``arguments`` (``purge=true``) and host ``data``."""
    run = run_pyinfra(hosts, operation, *arguments, data=data)
    assert run.returncode == 0, run.output


def assert_converged(hosts, operation: str, *arguments: str, **data) -> None:
    dry = run_pyinfra(hosts, operation, *arguments, data=data, dry=True, as_json=True)
    assert dry.returncode == 0 and dry.changed_hosts() == {}, dry.output
    rerun = run_pyinfra(hosts, operation, *arguments, data=data, as_json=True)
    assert rerun.json["results"]["totals"]["success"] == 0, rerun.output


def test_a_user_builds_with_their_own_buildkit_and_a_second_user_is_isolated(boot_hosts, real_data):
    host, hosts = boot_rootless_host(boot_hosts, real_data)
    host.run("useradd -m -s /bin/bash alice && useradd -m -s /bin/bash bob")
    host.run("sed -i '/^bob:/d' /etc/subuid /etc/subgid")  # bob gets a range from the deploy
    alice = uid_of(host, "alice")

    deploy(hosts, INSTALL, rootless_user="alice")

    state = rootless_state(hosts, "alice")
    assert state["lingering"] and state["manager"]
    assert state["units"]["containerd.service"]["active"] and state["units"]["buildkit.socket"]["enabled"]
    socket = f"/run/user/{alice}/buildkit-default/buildkitd.sock"
    assert state["socket"] == {"path": socket, "exists": True, "listening": socket}
    build_as(host, "alice", "alice-app:1")
    assert "docker.io/library/alice-app:1" in as_user(host, "alice", "nerdctl images").stdout
    assert "docker.io/library/alice-app:1" in images_of(host, "alice")
    assert image_file(host, "alice", "docker.io/library/alice-app:1", "shout.txt") == "HELLO ALICE\n"  # RUN ran
    # slirp4netns: RUN steps see RootlessKit's network namespace (its tap0), not the host's interfaces.
    assert interfaces(image_file(host, "alice", "docker.io/library/alice-app:1", "net.txt")) == {"lo", "tap0"}
    buildkitd = host.run("ps -o user= -C buildkitd").stdout.split()
    assert buildkitd == ["alice"], buildkitd  # the root BuildKit was never started
    assert "alice-app" not in host.run("ctr -n default images ls -q").stdout  # not in root's containerd
    assert_converged(hosts, INSTALL, rootless_user="alice")

    # The user's manager stopped and started (as at a reboot): BuildKit comes back through its socket.
    host.run(f"systemctl restart user@{alice}.service")
    build_as(host, "alice", "alice-app:2")
    assert {"docker.io/library/alice-app:1", "docker.io/library/alice-app:2"} <= images_of(host, "alice")

    deploy(hosts, INSTALL, rootless_user="bob", rootless_network="host")

    ranges = host.run("grep -h '' /etc/subuid /etc/subgid").stdout.split()
    bob_range = [line for line in ranges if line.startswith("bob:")]
    assert len(bob_range) == 2 and bob_range[0] == bob_range[1], ranges
    start = int(bob_range[0].split(":")[1])
    others = [(int(line.split(":")[1]), int(line.split(":")[2])) for line in ranges if not line.startswith("bob:")]
    assert all(start + 65536 <= begin or begin + count <= start for begin, count in others), ranges
    build_as(host, "bob", "bob-app:1")
    assert "docker.io/library/bob-app:1" in images_of(host, "bob")
    bob_net = image_file(host, "bob", "docker.io/library/bob-app:1", "net.txt")
    assert interfaces(bob_net) == interfaces(host.run("cat /proc/net/dev").stdout), bob_net
    assert "docker.io/library/alice-app:1" not in images_of(host, "bob")
    intrusion = as_user(
        host,
        "bob",
        f"buildctl --addr unix:///run/user/{alice}/buildkit-default/buildkitd.sock debug workers",
        check=False,
    )
    assert intrusion.returncode != 0 and "permission denied" in intrusion.stderr.lower(), intrusion
    assert_converged(hosts, INSTALL, rootless_user="bob", rootless_network="host")

    # A new namespace changes the socket and BuildKit's config: those restart, containerd does not.
    containerd = invocation(host, "alice", "containerd.service")
    deploy(hosts, INSTALL, rootless_user="alice", rootless_namespace="builds")
    assert invocation(host, "alice", "containerd.service") == containerd
    build_as(host, "alice", "alice-app:3")
    assert images_of(host, "alice", "builds") == {"docker.io/library/alice-app:3"}
    assert "docker.io/library/alice-app:3" in as_user(host, "alice", "nerdctl images").stdout
    assert_converged(hosts, INSTALL, rootless_user="alice", rootless_namespace="builds")

    deploy(hosts, REMOVE, rootless_user="alice", rootless_namespace="builds")

    state = rootless_state(hosts, "alice")
    assert not state["lingering"] and state["files"] == {}
    assert host.run(f"test -e /run/user/{alice}", check=False).returncode == 1  # the manager is gone too
    assert state["data"], "alice's images are kept without purge"
    assert_converged(hosts, REMOVE, rootless_user="alice", rootless_namespace="builds")
    build_as(host, "bob", "bob-app:2")  # bob's BuildKit is untouched

    deploy(hosts, REMOVE, "purge=true", rootless_user="bob")

    state = rootless_state(hosts, "bob")
    assert state["data"] == [] and state["subuid"] == [] and not state["lingering"]
    left = host.run("cd /home/bob && find .config .local -mindepth 1 | sort").stdout.split()
    assert left == [".config/systemd", ".config/systemd/user", ".local/share"], left
    assert_converged(hosts, REMOVE, "purge=true", rootless_user="bob")
    assert host.run("test -e /var/lib/pyinfra-nerdctl/rootless", check=False).returncode == 1  # no marker left
    assert host.run("ps -o user= -C buildkitd,containerd-rootless.sh,rootlesskit", check=False).stdout == ""


def snapshot(host) -> str:
    """What a failed deploy must leave exactly as it was."""
    return host.run(
        "cat /etc/subuid /etc/subgid; ls -la /var/lib/systemd/linger /var/lib/pyinfra-nerdctl 2>&1; "
        "find /home /run/user -printf '%p %m %u %T@\\n' 2>/dev/null | sort; dpkg -l | md5sum; "
        "loginctl list-users --no-legend"
    ).stdout


def refused(hosts, expected: str, **data) -> None:
    run = run_pyinfra(hosts, INSTALL, data=data)
    assert run.returncode != 0 and expected in run.output, run.output


def test_each_missing_prerequisite_is_refused_before_anything_changes(boot_hosts, real_data):
    (host,) = boot_hosts(1, **ROOTLESS_HOST)
    hosts = inventory([host], **real_data)
    host.run("useradd -m carol && sed -i '/^carol:/d' /etc/subuid /etc/subgid")
    before = snapshot(host)
    refused(hosts, "not found in /usr/local/bin: install the build host first", rootless_user="carol")
    refused(hosts, "rootless_user is not set")
    refused(hosts, "rootless_network='bridge' is neither", rootless_user="carol", rootless_network="bridge")
    assert snapshot(host) == before

    deploy(hosts, BUILD_HOST)
    before = snapshot(host)
    refused(hosts, "user 'dave' does not exist", rootless_user="dave")
    refused(hosts, "user 'root' is root (uid 0)", rootless_user="root")
    host.run("echo 0 > /tmp/zero && mount --bind /tmp/zero /proc/sys/user/max_user_namespaces")
    refused(hosts, "refuses unprivileged user namespaces (user.max_user_namespaces=0)", rootless_user="carol")
    host.run("umount /proc/sys/user/max_user_namespaces && rm /tmp/zero")
    host.run("mount --bind /dev/null /usr/bin/newuidmap && mount --bind /dev/null /usr/bin/newgidmap")
    refused(
        hosts,
        "newuidmap, newgidmap not found and rootless_packages is off",
        rootless_user="carol",
        rootless_packages="false",
    )
    host.run("umount /usr/bin/newuidmap /usr/bin/newgidmap")
    host.run("cp /etc/subuid /tmp/subuid && echo 'filler:100000:600000001' >> /etc/subuid")
    refused(hosts, "user 'carol' has no subordinate ID range and none of 65536 IDs is free", rootless_user="carol")
    host.run("mv /tmp/subuid /etc/subuid")
    assert snapshot(host) == before


def test_a_host_without_systemd_is_refused(boot_hosts, real_data):
    (host,) = boot_hosts(1, systemd=False)
    hosts = inventory([host], **real_data)
    run = run_pyinfra(hosts, INSTALL, data={"rootless_user": "operator1"})
    assert run.returncode != 0 and "systemd is not the running init system" in run.output, run.output
    assert host.run("ls /var/lib/pyinfra-nerdctl 2>&1; cat /etc/subuid", check=False).stdout == (
        "ls: cannot access '/var/lib/pyinfra-nerdctl': No such file or directory\noperator1:100000:65536\n"
    )


def test_missing_programs_come_from_the_distribution_with_pyinfras_apt_operation(boot_hosts, real_data):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD, extra_args=ROOTLESS_HOST["extra_args"])
    host.run("chmod 0666 /dev/net/tun && useradd -m alice")
    assert host.run("command -v rootlesskit newuidmap", check=False).returncode != 0
    hosts = inventory([host], **real_data)
    deploy(hosts, BUILD_HOST)

    deploy(hosts, INSTALL, rootless_user="alice")

    host.run("dpkg -s uidmap rootlesskit slirp4netns dbus-user-session >/dev/null")
    workers = as_user(
        host,
        "alice",
        f"buildctl --addr unix:///run/user/{uid_of(host, 'alice')}/buildkit-default/buildkitd.sock debug workers -v",
    )
    assert "org.mobyproject.buildkit.worker.containerd.namespace:\tdefault" in workers.stdout, workers.stdout
    assert_converged(hosts, INSTALL, rootless_user="alice")


USER_CHECK = "Check that the user's BuildKit answers with the containerd worker"
# A buildkitd that refuses to run from a unit with TimeoutStopSec=120 (buildkit_drain_timeout=120), as a
# daemon refuses new files it cannot run with.
REFUSING_BUILDKITD = """#!/bin/sh
if grep -qx TimeoutStopSec=120 /home/alice/.config/systemd/user/buildkit.service; then
  echo "this buildkitd refuses TimeoutStopSec=120" >&2
  exit 1
fi
exec /usr/local/bin/buildkitd.real "$@"
"""


def one_line(output: str, message: str) -> str:
    lines = [line for line in output.splitlines() if message in line]
    assert len(lines) == 1, output
    return lines[0]


def user_files_listing(host, user: str) -> str:
    """The user's managed files with their content and times: what a refused run must leave as it was."""
    return host.run(
        f"cd /home/{user} && find .config -type f -printf '%p %m %T@\\n' 2>/dev/null | sort; "
        f"cat .config/buildkit/buildkitd.toml .config/nerdctl/nerdctl.toml 2>/dev/null"
    ).stdout


def workers_of(host, user: str, namespace: str):
    socket = f"/run/user/{uid_of(host, user)}/buildkit-{namespace}/buildkitd.sock"
    return as_user(host, user, f"buildctl --addr unix://{socket} debug workers -v", check=False)


def test_rootless_runs_share_the_host_lock_show_their_diff_and_prove_the_users_buildkit(boot_hosts, real_data):
    host, hosts = boot_rootless_host(boot_hosts, real_data)
    host.run("useradd -m -s /bin/bash alice && sed -i '/^alice:/d' /etc/subuid /etc/subgid")

    # A held lock: the run waits host_lock_wait, then fails with one line naming the lock, before any change.
    before = snapshot(host)
    host.run(f"setsid -f sh -c 'echo $$ > /tmp/holder; exec flock {LOCK_FILE} sleep 300' >/dev/null 2>&1 < /dev/null")
    host.run("for i in $(seq 50); do [ -s /tmp/holder ] && break; sleep 0.1; done")
    held = run_pyinfra(hosts, INSTALL, data={"rootless_user": "alice", "host_lock_wait": 3})
    assert held.returncode != 0
    one_line(held.output, f"another pyinfra-nerdctl run on this host held {LOCK_FILE} for 3 s (host_lock_wait)")
    assert snapshot(host) == before
    host.run("kill $(cat /tmp/holder)")

    # Two rootless runs and a build-host run at once: they take turns on the lock, all succeed, and the
    # user gets one subordinate range (the second run does not add the first run's range again).
    runs = {}
    jobs = {
        "rootless 1": (INSTALL, {"rootless_user": "alice"}),
        "rootless 2": (INSTALL, {"rootless_user": "alice"}),
        "build host": (BUILD_HOST, {"nerdctl_config": '{"experimental": true}'}),
    }

    def run(label: str) -> None:
        operation, data = jobs[label]
        runs[label] = run_pyinfra(hosts, operation, data=data)

    threads = [threading.Thread(target=run, args=(label,)) for label in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for label, result in runs.items():
        assert result.returncode == 0, (label, result.output)
    assert host.run("grep -c ^alice: /etc/subuid /etc/subgid").stdout.split() == ["/etc/subuid:1", "/etc/subgid:1"]
    assert "experimental = true" in host.run("cat /etc/nerdctl/nerdctl.toml").stdout
    assert_converged(hosts, INSTALL, rootless_user="alice")
    assert_converged(hosts, BUILD_HOST, nerdctl_config='{"experimental": true}')
    build_as(host, "alice", "alice-app:1")

    # --diff shows the user's files; a converged host reads nothing more for it.
    converged = run_pyinfra(hosts, INSTALL, data={"rootless_user": "alice"}, dry=True, extra_args=("--diff",))
    assert converged.returncode == 0 and "Will modify" not in converged.output, converged.output
    change = {"rootless_user": "alice", "rootless_namespace": "builds"}
    plan = run_pyinfra(hosts, INSTALL, data=change, dry=True, extra_args=("--diff",))
    assert plan.returncode == 0, plan.output
    assert "Will modify ~alice/.config/nerdctl/nerdctl.toml" in plan.output, plan.output
    assert "Will modify ~alice/.config/buildkit/buildkitd.toml" in plan.output
    assert "Will modify ~alice/.config/systemd/user/buildkit.socket" in plan.output
    assert '- namespace = "default"' in plan.output.replace("-namespace", "- namespace")
    assert '+ namespace = "builds"' in plan.output.replace("+namespace", "+ namespace")

    # After the change, the check proves the user's BuildKit answers (and keeps copies of what works).
    changed = run_pyinfra(hosts, INSTALL, data=change, as_json=True)
    assert changed.returncode == 0, changed.output
    assert any(USER_CHECK in name for name in changed.changes_made()[host.name]), changed.output
    assert "org.mobyproject.buildkit.worker.containerd.namespace:\tbuilds" in workers_of(host, "alice", "builds").stdout
    assert host.run("ls /home/alice/.local/share/pyinfra-nerdctl/buildkit-good").stdout.split() == [
        "_home_alice_.config_buildkit_buildkitd.toml",
        "_home_alice_.config_systemd_user_buildkit.service",
        "_home_alice_.config_systemd_user_buildkit.socket",
    ]
    assert host.run("stat -c %U /home/alice/.local/share/pyinfra-nerdctl/buildkit-good").stdout == "alice\n"

    # A daemon that refuses the new files: they go back, the user's BuildKit answers again on them, the run fails.
    working = user_files_listing(host, "alice")
    host.run("cp -p /usr/local/bin/buildkitd /usr/local/bin/buildkitd.real")
    host.run(f"cat > /usr/local/bin/buildkitd.new <<'EOF'\n{REFUSING_BUILDKITD}EOF\n")
    host.run("chmod 755 /usr/local/bin/buildkitd.new && mv /usr/local/bin/buildkitd.new /usr/local/bin/buildkitd")
    refused_run = run_pyinfra(hosts, INSTALL, data={**change, "buildkit_drain_timeout": 120})
    assert refused_run.returncode != 0
    line = one_line(refused_run.output, "buildkitd refused the new /home/alice/.config/systemd/user/buildkit.service")
    assert "BuildKit works again with the previous ones" in line, refused_run.output
    assert user_files_listing(host, "alice") == working  # the same files, contents and times as before
    assert "TimeoutStopSec=600" in host.run("cat /home/alice/.config/systemd/user/buildkit.service").stdout
    assert "namespace:\tbuilds" in workers_of(host, "alice", "builds").stdout
    host.run("mv /usr/local/bin/buildkitd.real /usr/local/bin/buildkitd")

    # Removal takes the copies away with the rest.
    deploy(hosts, REMOVE, rootless_user="alice", rootless_namespace="builds")
    assert host.run("test -e /home/alice/.local/share/pyinfra-nerdctl", check=False).returncode == 1
    assert_converged(hosts, REMOVE, rootless_user="alice", rootless_namespace="builds")


SLEEPING_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 45; echo TAG > /slept.txt"]
"""


def start_build(host, user: str, tag: str) -> None:
    """A build as ``user`` whose RUN step sleeps 45 s, in the background; its exit status lands in ~/build.rc."""
    as_user(
        host,
        user,
        f"mkdir -p slow && cp /bin/busybox slow/ && cat > slow/Dockerfile <<'EOF'\n"
        f"{SLEEPING_DOCKERFILE.replace('TAG', tag)}EOF\n"  # a step of its own: never taken from the cache
        f"rm -f build.rc && setsid -f sh -c 'nerdctl build -t {tag} slow > build.log 2>&1; echo $? > build.rc' "
        "< /dev/null > /dev/null 2>&1",
    )
    socket = f"/run/user/{uid_of(host, user)}/buildkit-default/buildkitd.sock"
    as_user(
        host,
        user,
        f"for i in $(seq 60); do buildctl --addr unix://{socket} debug histories | grep -q ^STARTED && exit 0; "
        "sleep 1; done; cat build.log; exit 1",
    )


def test_a_users_build_in_flight_outlives_rootless_config_changes(boot_hosts, real_data):
    host, hosts = boot_rootless_host(boot_hosts, real_data)
    host.run("useradd -m -s /bin/bash alice")
    deploy(hosts, INSTALL, rootless_user="alice")
    change = {"rootless_user": "alice", "rootless_namespace": "builds"}

    # Too short a drain: the host fails with one line, the build runs on, the new files stay on disk.
    start_build(host, "alice", "slow:1")
    daemon = invocation(host, "alice", "buildkit.service")
    short = run_pyinfra(hosts, INSTALL, data={**change, "buildkit_drain_timeout": 5})
    assert short.returncode != 0
    line = one_line(short.output, "build(s) still running on buildkit.service (the oldest since")
    assert line.split("build(s)")[0].strip().endswith("1"), line
    assert "BuildKit keeps its previous setup until a later run" in line
    assert invocation(host, "alice", "buildkit.service") == daemon
    assert 'namespace = "builds"' in host.run("cat /home/alice/.config/buildkit/buildkitd.toml").stdout
    assert host.run("test -e /home/alice/build.rc", check=False).returncode == 1  # still building

    # The default drain waits for the build, then restarts onto the new files.
    waited = run_pyinfra(hosts, INSTALL, data=change, timeout=400)
    assert waited.returncode == 0, waited.output
    assert host.run("cat /home/alice/build.rc").stdout == "0\n", host.run("cat /home/alice/build.log").stdout
    assert "docker.io/library/slow:1" in images_of(host, "alice")
    assert invocation(host, "alice", "buildkit.service") != daemon
    assert "namespace:\tbuilds" in workers_of(host, "alice", "builds").stdout
    assert_converged(hosts, INSTALL, **change)

    # A removal during a build waits for it too.
    deploy(hosts, INSTALL, rootless_user="alice")
    start_build(host, "alice", "slow:2")
    deploy(hosts, REMOVE, rootless_user="alice")
    assert host.run("cat /home/alice/build.rc").stdout == "0\n", host.run("cat /home/alice/build.log").stdout
