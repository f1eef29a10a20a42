"""A build host as a remote builder with the real BuildKit: buildx on another host builds through TCP with mutual TLS.

These need a real release archive (``PYINFRA_NERDCTL_REAL_BUILDKIT``); without it they skip and say so.
The hosts share this machine's network namespace, each on its own 127.x address, so the test
process reaches a host's port (and can take one) directly.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import testhosts
from conftest import inventory
from hostcheck import DEPLOY
from pyinfra_cli import run_pyinfra
from pyinfra_nerdctl import certs
from test_real_buildkit import DOCKERFILE, real_data

pytestmark = pytest.mark.hosts

PORT = 1234
BUILDCTL = "/usr/local/bin/buildctl"
SERVICE_UNIT = "/etc/systemd/system/buildkit.service"


def listening(address: str) -> bool:
    try:
        with socket.create_connection((address, PORT), timeout=3):
            return True
    except OSError:
        return False


def put_files(host: testhosts.TestHost, folder: str, files: list[Path]) -> None:
    """The controller's ``files`` into ``folder`` on ``host`` (root-only)."""
    script = f"install -d -m 700 {folder}\n" + "".join(
        f"cat > {folder}/{path.name} <<'EOF'\n{path.read_text()}EOF\n" for path in files
    )
    host.run(script)


def buildctl_remote(host: testhosts.TestHost, address: str, tls: str = "") -> str:
    """``buildctl debug workers`` on ``host`` through the remote listener; its output, or ``refused: ...``."""
    asked = host.run(f"timeout 30 {BUILDCTL} --addr tcp://{address}:{PORT} {tls} debug workers -v", check=False)
    return asked.stdout if asked.returncode == 0 else f"refused: {asked.stderr.strip()[-300:]}"


def local_workers(host: testhosts.TestHost) -> str:
    return host.run(f"timeout 30 {BUILDCTL} debug workers -v").stdout


@pytest.fixture
def client_certs(tmp_path):
    def issue(name: str, ca_dir: Path) -> list[Path]:
        return certs.write_client(str(ca_dir), name, str(tmp_path / f"client-{name}"))

    return issue


def test_buildx_on_another_host_builds_with_a_client_certificate_and_nobody_else_gets_in(
    boot_hosts, mirror, real_buildkit, tmp_path, client_certs
):
    (builder,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD, **testhosts.REAL_BUILDS)
    (client,) = boot_hosts(1, image=testhosts.TRIXIE_BUILDX)
    hosts = inventory([builder])
    ca_dir = tmp_path / "ca"
    remote = real_data(
        mirror, real_buildkit, buildkit_remote_address=f"{builder.address}:{PORT}", buildkit_ca_dir=ca_dir
    )

    # A CA folder the controller cannot make: one line, before the host is touched.
    (tmp_path / "file").write_text("")
    refused = run_pyinfra(hosts, DEPLOY, data={**remote, "buildkit_ca_dir": tmp_path / "file" / "ca"})
    assert refused.returncode != 0 and "buildkit_ca_dir=" in refused.output and "is not writable" in refused.output
    assert builder.run("test ! -e /etc/buildkit && test ! -e /usr/local/bin/buildkitd", check=False).returncode == 0

    # --dry on a controller without a CA: the plan says it would be made; the controller and the host stay as they were.
    dry = run_pyinfra(hosts, DEPLOY, data=remote, dry=True)
    assert dry.returncode == 0 and f"Create the fleet's CA in {ca_dir} on the controller" in dry.output, dry.output
    assert not ca_dir.exists()
    assert builder.run("test ! -e /etc/buildkit && test ! -e /usr/local/bin/buildkitd", check=False).returncode == 0

    run = run_pyinfra(hosts, DEPLOY, data=remote)
    assert run.returncode == 0, run.output
    assert listening(builder.address)
    assert (ca_dir / certs.CA_KEY).stat().st_mode & 0o777 == 0o600
    assert builder.run("systemctl is-enabled buildkit.service").stdout.strip() == "enabled"
    assert builder.run("stat -c %a:%U /etc/buildkit/tls /etc/buildkit/tls/server.pem").stdout.split() == [
        "700:root",
        "600:root",
    ]
    # The CA's key is on the controller only: no file on the build host holds a line of it.
    ca_key_line = (ca_dir / certs.CA_KEY).read_text().splitlines()[1]
    search = builder.run(
        f"grep -rlF -D skip -e {ca_key_line!r} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev", check=False
    )
    assert (search.returncode, search.stdout) == (1, ""), search.stdout

    # buildx, standalone on another host, builds with COPY and RUN through the remote driver.
    put_files(client, "/root/client", client_certs("ci-runner", ca_dir))
    driver = "cacert=/root/client/ca.pem,cert=/root/client/cert.pem,key=/root/client/key.pem"
    client.run(
        f"{testhosts.BUILDX} create --name fleet --driver remote --driver-opt {driver} tcp://{builder.address}:{PORT}"
    )
    client.run(
        "mkdir -p /root/ctx && cd /root/ctx && cp /bin/busybox busybox && echo hello > hello.txt && "
        f"cat > Dockerfile <<'EOF'\n{DOCKERFILE}EOF\n"
    )
    build = client.run(
        f"cd /root/ctx && {testhosts.BUILDX} --builder fleet build --output type=local,dest=out .", check=False
    )
    assert build.returncode == 0, build.stderr
    assert client.run("cat /root/ctx/out/built.txt /root/ctx/out/hello.txt").stdout == "built by 0\nhello\n"

    # No certificate, one from another CA, or plain TCP: refused. The CA's own client gets in, by the host's IP.
    put_files(builder, "/root/good", client_certs("good", ca_dir))
    put_files(builder, "/root/other", client_certs("other", tmp_path / "other-ca"))
    good = "--tlscacert /root/good/ca.pem --tlscert /root/good/cert.pem --tlskey /root/good/key.pem"
    other = "--tlscacert /root/good/ca.pem --tlscert /root/other/cert.pem --tlskey /root/other/key.pem"
    assert "containerd" in buildctl_remote(builder, builder.address, good)
    # TLS 1.3 finishes the client's handshake before the server's alert: "certificate required", or a broken pipe.
    assert buildctl_remote(builder, builder.address, "--tlscacert /root/good/ca.pem").startswith("refused: ")
    assert buildctl_remote(builder, builder.address, other).startswith("refused: ")
    assert buildctl_remote(builder, builder.address).startswith("refused: ")
    # The unix socket still answers, as before, without TLS.
    assert "containerd" in local_workers(builder)

    commands_before = builder.commands_logged()
    rerun = run_pyinfra(hosts, DEPLOY, data=remote, as_json=True)
    assert rerun.returncode == 0 and rerun.json["results"]["totals"]["success"] == 0, rerun.output
    assert builder.commands_logged() - commands_before == 2  # the one state fact, and this count itself

    # Another name: a new certificate, onto which BuildKit restarts (drained), and clients may use that name.
    pid = builder.run("systemctl show -p MainPID --value buildkit.service").stdout
    renamed = {**remote, "buildkit_remote_names": "builder.example.internal"}
    run = run_pyinfra(hosts, DEPLOY, data=renamed, as_json=True)
    assert run.returncode == 0, run.output
    changed = {name.rsplit(" | ", 1)[-1] for name in run.changes_made()[builder.name]}
    assert changed == {
        "Write /etc/buildkit/tls/server.pem",
        "Wait for the builds in flight on buildkit.service",
        "Restart buildkit.service",
        "Check that BuildKit answers with the containerd worker",
    }
    assert builder.run("systemctl show -p MainPID --value buildkit.service").stdout != pid
    by_name = f"{good} --tlsservername builder.example.internal"
    assert "containerd" in buildctl_remote(builder, builder.address, by_name)

    # Off again: the port closes (a drained restart), the server's key goes, BuildKit is on demand again.
    off = {key: value for key, value in renamed.items() if key != "buildkit_remote_address"}
    run = run_pyinfra(hosts, DEPLOY, data=off)
    assert run.returncode == 0, run.output
    assert not listening(builder.address)
    assert builder.run("test ! -e /etc/buildkit/tls", check=False).returncode == 0
    assert builder.run("systemctl is-enabled buildkit.service", check=False).stdout.strip() != "enabled"
    assert "containerd" in local_workers(builder)


def test_a_port_taken_by_something_else_fails_the_run_clearly_and_the_host_keeps_building(
    boot_hosts, mirror, real_buildkit, tmp_path
):
    (builder,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD, **testhosts.REAL_BUILDS)
    hosts = inventory([builder])
    plain = real_data(mirror, real_buildkit, buildkit_ca_dir=tmp_path / "ca")
    assert run_pyinfra(hosts, DEPLOY, data=plain).returncode == 0
    unit = builder.run(f"cat {SERVICE_UNIT}").stdout
    remote = {**plain, "buildkit_remote_address": f"{builder.address}:{PORT}"}

    with socket.create_server((builder.address, PORT)):
        run = run_pyinfra(hosts, DEPLOY, data=remote)
        assert run.returncode != 0
        assert f"buildkitd refused the new {SERVICE_UNIT}" in run.output, run.output
        assert "address already in use" in run.output
        assert builder.run(f"cat {SERVICE_UNIT}").stdout == unit
        assert "containerd" in local_workers(builder)

    # Once the port is free, the next run converges with no manual step. Lost TLS files come back, the key
    # through a sudo login too (it travels through the login user's private temporary file).
    builder.run("rm -r /etc/buildkit/tls")
    via_sudo = inventory([builder], ssh_user=testhosts.OPERATOR)
    run = run_pyinfra(via_sudo, DEPLOY, data=remote, extra_args=("--sudo",))
    assert run.returncode == 0, run.output
    assert listening(builder.address)
    assert builder.run("stat -c %a:%U:%G /etc/buildkit/tls/server.pem").stdout.strip() == "600:root:root"
    assert builder.run(f"find /tmp -user {testhosts.OPERATOR}").stdout == ""
