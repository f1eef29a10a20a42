"""The ground every other test stands on: hosts, the CLI over SSH, the mirror, socket activation."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request

import mirror as mirror_module
import pytest
import testhosts
from conftest import inventory
from pyinfra_cli import run_pyinfra


@pytest.mark.hosts
@pytest.mark.parametrize("count", [1, 5])
def test_cli_deploys_over_ssh_to_booted_hosts(boot_hosts, count):
    hosts = boot_hosts(count)
    assert len({host.address for host in hosts}) == count

    run = run_pyinfra(inventory(hosts), "files.line", "path=/etc/motd", "line=built by pyinfra-nerdctl tests")

    assert run.returncode == 0, run.output
    for host in hosts:
        assert "built by pyinfra-nerdctl tests" in host.run("cat /etc/motd").stdout
        assert host.run("hostname").stdout.strip() == f"{testhosts.MACHINE_PREFIX}{host.name}"


@pytest.mark.hosts
def test_hosts_have_their_own_cgroups_and_stop_cleanly(boot_hosts):
    first, second = boot_hosts(2)
    for host in (first, second):
        assert "system.slice/ssh.service" in host.run("cat /proc/self/cgroup").stdout
    testhosts.stop(first)
    assert first.process.poll() is not None
    assert not any(cgroup.exists() for cgroup in testhosts._cgroup_dirs(testhosts.MACHINE_PREFIX + first.name))
    assert second.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded")


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_mirror_serves_upstream_layout_under_github_paths(mirror):
    nerdctl = urllib.request.urlopen(
        mirror.url + "/containerd/nerdctl/releases/download/v2.3.5/nerdctl-2.3.5-linux-amd64.tar.gz"
    ).read()
    assert sorted(_members(nerdctl)) == ["containerd-rootless-setuptool.sh", "containerd-rootless.sh", "nerdctl"]
    sums = (
        urllib.request.urlopen(mirror.url + "/containerd/nerdctl/releases/download/v2.3.5/SHA256SUMS").read().decode()
    )
    assert f"{hashlib.sha256(nerdctl).hexdigest()}  nerdctl-2.3.5-linux-amd64.tar.gz\n" in sums
    old = _members(mirror_module.buildkit_archive("0.12.5", "amd64"))
    new = _members(mirror_module.buildkit_archive("0.13.0", "arm64"))
    assert {"bin/buildctl", "bin/buildkitd", "bin/buildkit-runc", "bin/buildkit-qemu-aarch64"} <= set(old)
    assert not any("cni" in name for name in old)
    assert "bin/buildkit-cni-bridge" in new and "bin/buildkit-qemu-aarch64" not in new
    full = _members(mirror_module.full_archive("2.3.5", "amd64"))
    assert {
        "bin/containerd",
        "lib/systemd/system/buildkit.service",
        "libexec/cni/bridge",
        "share/doc/nerdctl-full/README.md",
    } <= set(full)


@pytest.mark.parametrize("fault", [fault for fault in mirror_module.FAULTS if fault != "slow"])
def test_mirror_fails_on_request(mirror, fault):
    path = "/moby/buildkit/releases/download/v0.12.5/buildkit-v0.12.5.linux-amd64.tar.gz"
    good = mirror_module.buildkit_archive("0.12.5", "amd64")
    mirror.fail(fault, "buildkit")
    try:
        body = urllib.request.urlopen(mirror.url + path).read()
    except urllib.error.HTTPError as error:
        assert str(error.code) == fault
        return
    except Exception:  # a truncated body raises IncompleteRead
        assert fault == "truncated"
        return
    assert fault in ("html", "wrong-bytes") and body != good


def test_standin_versions_match_upstream_output(tmp_path):
    for name, archive, expected in (
        ("nerdctl", mirror_module.nerdctl_archive("2.3.5", "amd64"), "nerdctl version 2.3.5"),
        (
            "bin/buildkitd",
            mirror_module.buildkit_archive("0.12.5", "amd64"),
            "buildkitd github.com/moby/buildkit v0.12.5 ",
        ),
        (
            "bin/buildctl",
            mirror_module.buildkit_archive("0.12.5", "amd64"),
            "buildctl github.com/moby/buildkit v0.12.5 ",
        ),
    ):
        executable = tmp_path / name.replace("/", "_")
        executable.write_bytes(_members(archive)[name])
        executable.chmod(0o755)
        import subprocess

        printed = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=True).stdout
        assert printed.startswith(expected) and printed.count("\n") == 1
        if "buildkit" in expected:
            assert len(printed.split()) == 4 and len(printed.split()[3]) == 40


@pytest.mark.hosts
def test_standin_buildkitd_is_socket_activated_by_systemd(boot_hosts, mirror):
    (host,) = boot_hosts(1)
    url = mirror.url + mirror_module.buildkit_path("0.12.5", mirror_module.buildkit_asset("0.12.5", "amd64"))
    host.run(f"curl -fsS {url} | tar -xz -C /usr/local")
    host.run(
        "mkdir -p /etc/buildkit && printf '[worker.oci]\\nenabled = false\\n[worker.containerd]\\nenabled = true\\n"
        'address = "/run/fake-containerd.sock"\\nnamespace = "k8s.io"\\n\' > /etc/buildkit/buildkitd.toml && '
        "python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind(\"/run/fake-containerd.sock\")'"
    )
    host.run(
        "printf '[Socket]\\nListenStream=%%t/buildkit/buildkitd.sock\\nSocketMode=0660\\n[Install]\\nWantedBy=sockets.target\\n' "
        "> /etc/systemd/system/buildkit.socket && "
        "printf '[Unit]\\nRequires=buildkit.socket\\nAfter=buildkit.socket\\n[Service]\\nType=notify\\n"
        "ExecStart=/usr/local/bin/buildkitd --addr fd://\\n' > /etc/systemd/system/buildkit.service && "
        "systemctl daemon-reload && systemctl enable --now buildkit.socket"
    )
    assert host.run("systemctl is-active buildkit.service", check=False).stdout.strip() == "inactive"

    workers = host.run("/usr/local/bin/buildctl debug workers -v").stdout

    assert "org.mobyproject.buildkit.worker.containerd.namespace:\tk8s.io" in workers
    assert host.run("systemctl is-active buildkit.service").stdout.strip() == "active"
    start = json.loads(host.run("tail -n1 /run/buildkit-standin/starts.jsonl").stdout)
    assert start["argv"] == ["--addr", "fd://"] and start["listen_fds"] == "1"
    assert host.run("systemctl show -p MainPID --value buildkit.service").stdout.strip() == str(start["pid"])
    # Started by hand, without systemd's socket, it fails as upstream does.
    manual = host.run("/usr/local/bin/buildkitd --addr fd://", check=False)
    assert manual.returncode == 1 and "socket activation" in manual.stderr
