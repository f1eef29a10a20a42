"""The real BuildKit daemon on a real containerd: socket activation, workers, builds, config, refusal.

These need a real release archive: ``PYINFRA_NERDCTL_REAL_BUILDKIT`` names it (``.ci/run``
sets it to ../shared/real-buildkit/'s); without it they skip and say so. Hosts boot with
what real builds need (``testhosts.REAL_BUILDS``); each test shares one host between its steps.
"""

from __future__ import annotations

import json

import pytest
import testhosts
from conftest import RealBuildkit, deploy_data, inventory
from hostcheck import DEPLOY, start_k3s_containerd, unit_state
from pyinfra_cli import run_pyinfra

pytestmark = pytest.mark.hosts

BIN_DIR = "/opt/buildkit/bin"
# Every capability of buildkitd_config docs/configuration.md promises, applied at once to the real daemon.
EVERY_CAPABILITY = {
    "insecure-entitlements": ["network.host", "security.insecure"],
    "log": {"level": "debug", "format": "text"},
    "history": {"maxAge": "48h", "maxEntries": 50},
    "registry": {
        "docker.io": {"mirrors": ["mirror.registry.internal"]},
        "plain.registry.internal:5000": {"http": True},
        "self-signed.registry.internal": {"insecure": True},
        "private.registry.internal": {
            "ca": ["/etc/buildkit/certs/private-ca.pem"],
            "keypair": [{"key": "/etc/buildkit/certs/client.key", "cert": "/etc/buildkit/certs/client.pem"}],
        },
    },
    "worker": {
        "containerd": {
            "platforms": ["linux/amd64"],
            "max-parallelism": 2,
            "gc": True,
            "reservedSpace": "1GB",
            "maxUsedSpace": "10GB",
            "minFreeSpace": "10%",
            "gcpolicy": [
                {"filters": ["type==source.local", "type==exec.cachemount"], "keepDuration": "48h", "maxUsedSpace": "512MB"},
                {"all": True, "maxUsedSpace": "5GB"},
            ],
        }
    },
}
NERDCTL_CONFIG = {
    "hosts_dir": ["/etc/containerd/certs.d"],
    "insecure_registry": False,
    "snapshotter": "overlayfs",
    "cgroup_manager": "systemd",
    "data_root": "/var/lib/nerdctl",
    "experimental": True,
}
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY hello.txt /hello.txt
RUN ["/bin/busybox", "sh", "-c", "echo built by $(/bin/busybox id -u) > /built.txt"]
"""


def real_data(mirror, real: RealBuildkit, **data: object) -> dict:
    return deploy_data(mirror, buildkit_version=real.version, buildkit_sha256=real.sha256, **data)


def boot_build_host(boot_hosts) -> testhosts.TestHost:
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD, **testhosts.REAL_BUILDS)
    return host


def workers_fact(hosts, bin_dir: str = BIN_DIR) -> list[dict] | None:
    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.BuildkitWorkers", f"bin_dir={bin_dir}", as_json=True)
    assert facts.returncode == 0, facts.output
    (found,) = facts.json.values()  # keyed by the fact and its arguments
    return found[hosts[0][0]]


def build_as_operator(host: testhosts.TestHost, image: str) -> None:
    """A Dockerfile build with COPY and RUN by the non-root operator, through the socket group."""
    host.run(
        f"install -d -o {testhosts.OPERATOR} /home/{testhosts.OPERATOR}/ctx && cd /home/{testhosts.OPERATOR}/ctx && "
        f"cp /bin/busybox busybox && echo hello > hello.txt && cat > Dockerfile <<'EOF'\n{DOCKERFILE}EOF\n"
        f"chown -R {testhosts.OPERATOR} . && usermod -aG buildkit {testhosts.OPERATOR}"
    )
    build = host.run(
        f"su - {testhosts.OPERATOR} -c 'cd ctx && {BIN_DIR}/buildctl build --frontend dockerfile.v0 "
        f"--local context=. --local dockerfile=. --output type=image,name={image}'",
        check=False,
    )
    assert build.returncode == 0, build.stderr


def test_real_buildkit_builds_for_a_group_member_with_every_config_capability(boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    hosts = inventory([host])
    data = real_data(
        mirror,
        real_buildkit,
        bin_dir=BIN_DIR,
        containerd_namespace="builds",
        buildkit_socket_group="buildkit",
        buildkitd_config=json.dumps(EVERY_CAPABILITY),
        nerdctl_config=json.dumps(NERDCTL_CONFIG),
    )

    run = run_pyinfra(hosts, DEPLOY, data=data, as_json=True)

    assert run.returncode == 0, run.output
    assert "Check that BuildKit answers with the containerd worker" in run.changes_made()[host.name][-1]
    # The check left BuildKit on demand; the first client starts the real daemon through its socket.
    assert unit_state(host, "buildkit.service")["ActiveState"] == "inactive"
    (worker,) = workers_fact(hosts)
    assert (worker["executor"], worker["namespace"]) == ("containerd", "builds")
    pid = unit_state(host, "buildkit.service")["MainPID"]
    assert {platform.rsplit("/", 1)[0] for platform in worker["platforms"]} <= {"linux", "linux/amd64"}  # amd64/v2...
    environ = host.run(f"tr '\\0' '\\n' < /proc/{pid}/environ").stdout.splitlines()
    assert f"PATH={BIN_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in environ

    build_as_operator(host, "docker.io/library/pnt-built:1")

    images = host.run("ctr -n builds images ls -q").stdout.split()
    assert "docker.io/library/pnt-built:1" in images
    rerun = run_pyinfra(hosts, DEPLOY, data=data, as_json=True)
    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output
    assert unit_state(host, "buildkit.service")["MainPID"] == pid


def test_real_buildkit_on_k3s_containerd_survives_a_refused_config(boot_hosts, mirror, real_buildkit):
    host = boot_build_host(boot_hosts)
    start_k3s_containerd(host)
    hosts = inventory([host])
    data = real_data(
        mirror,
        real_buildkit,
        containerd_address="unix:///run/k3s/containerd/containerd.sock",
        containerd_namespace="k8s.io",
    )
    run = run_pyinfra(hosts, DEPLOY, data=data)
    assert run.returncode == 0, run.output
    (worker,) = workers_fact(hosts, "/usr/local/bin")
    assert (worker["executor"], worker["namespace"]) == ("containerd", "k8s.io")
    working = host.run("cat /etc/buildkit/buildkitd.toml").stdout

    # CNI plugins where there are none: well-typed, so only the daemon can refuse it.
    bad_cni = {"worker": {"containerd": {"networkMode": "cni", "cniBinaryPath": "/no/such/cni"}}}
    refused = {**data, "buildkitd_config": json.dumps(bad_cni)}
    run = run_pyinfra(hosts, DEPLOY, data=refused)

    assert run.returncode != 0
    assert "buildkitd refused the new /etc/buildkit/buildkitd.toml" in run.output, run.output
    assert "BuildKit works again with the previous ones" in run.output
    assert host.run("cat /etc/buildkit/buildkitd.toml").stdout == working
    (worker,) = workers_fact(hosts, "/usr/local/bin")
    assert worker["namespace"] == "k8s.io"

    # A fixed config converges with no manual step.
    fixed = {**data, "buildkitd_config": json.dumps({"worker": {"containerd": {"gc": True, "maxUsedSpace": "2GB"}}})}
    run = run_pyinfra(hosts, DEPLOY, data=fixed)
    assert run.returncode == 0, run.output
    assert 'maxUsedSpace = "2GB"' in host.run("cat /etc/buildkit/buildkitd.toml").stdout
    rerun = run_pyinfra(hosts, DEPLOY, data=fixed, as_json=True)
    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output
