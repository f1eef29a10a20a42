"""What host tests read off a build host: unit state, file state, BuildKit starts, plans."""

from __future__ import annotations

import json

import testhosts
from pyinfra_cli import run_pyinfra

DEPLOY = "pyinfra_nerdctl.deploys.install_build_host"
MANAGED_FILES = (
    "/usr/local/bin/nerdctl",
    "/usr/local/bin/buildkitd",
    "/usr/local/bin/buildctl",
    "/etc/nerdctl/nerdctl.toml",
    "/etc/buildkit/buildkitd.toml",
    "/etc/systemd/system/buildkit.socket",
    "/etc/systemd/system/buildkit.service",
)
K3S_CONTAINERD = """version = 2
root = "/var/lib/rancher/k3s/agent/containerd"
state = "/run/k3s/containerd"
[grpc]
  address = "/run/k3s/containerd/containerd.sock"
[ttrpc]
  address = "/run/k3s/containerd/containerd.sock.ttrpc"
"""
K3S_UNIT = """[Unit]
Description=k3s-like containerd
[Service]
Type=notify
ExecStart=/usr/bin/containerd --config /etc/k3s-containerd.toml
"""


def boot_containerd_host(boot_hosts) -> testhosts.TestHost:
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    return host


def boot_build_host(boot_hosts, image: testhosts.ImageRecipe = testhosts.TRIXIE_CONTAINERD) -> testhosts.TestHost:
    """A host to install on: trixie runs a real containerd; on other images a bare socket stands in for it.

    buildkitd's stand-in only checks that containerd's socket is there.
    """
    (host,) = boot_hosts(1, image=image)
    if image != testhosts.TRIXIE_CONTAINERD:
        host.run(
            'python3 -c \'import os, socket; os.makedirs("/run/containerd", exist_ok=True); '
            'socket.socket(socket.AF_UNIX).bind("/run/containerd/containerd.sock")\''
        )
    return host


def start_k3s_containerd(host: testhosts.TestHost) -> None:
    """Replace the host's containerd with one laid out like k3s's."""
    host.run(
        f"cat > /etc/k3s-containerd.toml <<'EOF'\n{K3S_CONTAINERD}EOF\n"
        f"cat > /etc/systemd/system/k3s.service <<'EOF'\n{K3S_UNIT}EOF\n"
        "systemctl disable --now containerd.service && systemctl daemon-reload && systemctl start k3s.service && "
        "ctr --address /run/k3s/containerd/containerd.sock version >/dev/null"
    )


def unit_state(host: testhosts.TestHost, unit: str) -> dict[str, str]:
    lines = host.run(f"systemctl show -p ActiveState,InvocationID,MainPID,UnitFileState {unit}").stdout.split()
    return dict(line.split("=", 1) for line in lines)


def mtimes(host: testhosts.TestHost) -> str:
    return host.run(f"stat -c '%n %Y.%y' {' '.join(MANAGED_FILES)}").stdout


def buildkit_starts(host: testhosts.TestHost) -> list[dict]:
    out = host.run("cat /run/buildkit-standin/starts.jsonl 2>/dev/null || true").stdout
    return [json.loads(line) for line in out.splitlines()]


def client_call(host: testhosts.TestHost, bin_dir: str = "/usr/local/bin") -> dict[str, str]:
    """``buildctl debug workers -v`` through the socket; its labels as a dict."""
    out = host.run(f"{bin_dir}/buildctl debug workers -v").stdout
    pairs = (line.strip().split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    return {key: value.strip() for key, value in pairs}


def plan(hosts, data) -> dict[str, list[str]]:
    dry = run_pyinfra(hosts, DEPLOY, data=data, dry=True, as_json=True)
    assert dry.returncode == 0, dry.output
    return dry.changed_hosts()


def deploy(hosts, data) -> None:
    run = run_pyinfra(hosts, DEPLOY, data=data)
    assert run.returncode == 0, run.output
