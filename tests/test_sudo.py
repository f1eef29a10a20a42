"""A non-root login with passwordless sudo: the same runs give the same results and the same host as root."""

from __future__ import annotations

import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, client_call
from pyinfra_cli import run_pyinfra
from pyinfra_nerdctl.layout import BINARY_VERSIONS

pytestmark = pytest.mark.hosts

REMOVE = "pyinfra_nerdctl.deploys.remove_build_host"
# Library use: the deploys called from the operator's own deploy file, with pyinfra's global argument.
LIBRARY_DEPLOYS = {
    DEPLOY: "from pyinfra_nerdctl.deploys import install_build_host\n\ninstall_build_host(_sudo=True)\n",
    REMOVE: "from pyinfra_nerdctl.deploys import remove_build_host\n\nremove_build_host(_sudo=True)\n",
}
# What the deploys own or touch; owners, modes and hashes, but no times (the version record keys
# each binary by its inode and times: its paths and version lines only).
RECORD = BINARY_VERSIONS.lstrip("/")
SNAPSHOT = (
    "cd / && find usr/local etc/nerdctl etc/buildkit etc/systemd/system etc/profile.d var/lib/pyinfra-nerdctl "
    "-printf '%p %y %M %u:%g\\n' 2>/dev/null | sort; "
    "find usr/local etc/nerdctl etc/buildkit etc/systemd/system var/lib/pyinfra-nerdctl -type f "
    f"! -path {RECORD} -exec sha256sum {{}} + 2>/dev/null | sort -k2; "
    f"cut -d'|' -f1,3 {RECORD} 2>/dev/null; "
    "systemctl show -p Id,UnitFileState,ActiveState buildkit.socket buildkit.service; "
    "ls -A /tmp /var/tmp | grep -v '^systemd-private-' || true"
)


def snapshot(host: testhosts.TestHost) -> str:
    return host.run(SNAPSHOT).stdout


def owned_by_the_login(host: testhosts.TestHost) -> str:
    """Files anywhere outside its home that the sudo login left behind as its own."""
    return host.run(
        f"find / -xdev -user {testhosts.OPERATOR} -not -path '/home/*' -not -path '/proc/*' 2>/dev/null || true"
    ).stdout


def test_sudo_login_runs_match_root(boot_hosts, mirror, tmp_path):
    as_root, via_cli, via_library = boot_hosts(3, image=testhosts.TRIXIE_CONTAINERD)
    login = {"ssh_user": testhosts.OPERATOR}
    for path, source in LIBRARY_DEPLOYS.items():
        (tmp_path / f"{path.rsplit('.', 1)[1]}.py").write_text(source)
    steps = [
        ("first install", DEPLOY, deploy_data(mirror)),
        ("rerun", DEPLOY, deploy_data(mirror)),
        (
            "upgrade from the controller",
            DEPLOY,
            deploy_data(
                mirror,
                nerdctl_version="2.4.1",
                buildkit_version="0.13.0",
                download_on_controller=True,
                release_cache_dir=str(tmp_path / "cache"),
            ),
        ),
        ("removal", REMOVE, {}),
    ]

    for step, operation, data in steps:
        runs = {
            "root": run_pyinfra(inventory([as_root]), operation, data=data),
            "--sudo": run_pyinfra(inventory([via_cli], **login), operation, data=data, extra_args=("--sudo",)),
            "_sudo=True": run_pyinfra(
                inventory([via_library], **login),
                str(tmp_path / f"{operation.rsplit('.', 1)[1]}.py"),
                data=data,
                cwd=tmp_path,
            ),
        }
        for login_way, run in runs.items():
            assert run.returncode == 0, f"{step}, {login_way}:\n{run.output}"
        results = {login_way: run.results() for login_way, run in runs.items()}
        assert results["--sudo"] == results["root"], step
        assert results["_sudo=True"] == results["root"], step
        expected = snapshot(as_root)
        assert snapshot(via_cli) == expected, step
        assert snapshot(via_library) == expected, step
        assert owned_by_the_login(via_cli) == owned_by_the_login(via_library) == "", step

        if step == "rerun":
            # A converged host calls no operation at all (the CLI skips idle steps): nothing may have changed.
            assert not any(counts["success"] for counts in results["root"].values())
        if step == "upgrade from the controller":
            for host in (as_root, via_cli, via_library):
                assert client_call(host)["buildkitd.version"] == "0.13.0"
                assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.1\n"
    assert not as_root.run("ls -A /usr/local/bin").stdout
