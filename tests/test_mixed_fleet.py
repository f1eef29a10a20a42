"""A mixed fleet reads true: every host runs the same operations, each named for what it does where it changes."""

from __future__ import annotations

import os

import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, deploy
from pyinfra_cli import run_pyinfra

pytestmark = pytest.mark.hosts

DEPLOY_NAME = "Install the nerdctl and BuildKit build host | "


def by_operation(entries: list[dict], hosts_key: str) -> dict[str, list[str]]:
    """Operation name (without the deploy's prefix) to the sorted hosts listed under ``hosts_key``."""
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"an operation name appears twice: {names}"
    return {entry["name"].removeprefix(DEPLOY_NAME): sorted(entry[hosts_key]) for entry in entries if entry[hosts_key]}


def test_installed_package_is_the_one_under_test():
    """CI runs this module with a normal (non-editable) install: pyinfra then skips no frame of ours by accident."""
    if not os.environ.get("PYINFRA_NERDCTL_EXPECT_INSTALLED"):
        pytest.skip("PYINFRA_NERDCTL_EXPECT_INSTALLED is unset: the editable install is under test")
    import pyinfra_nerdctl

    assert "site-packages" in pyinfra_nerdctl.__file__


def test_mixed_fleet_plan_and_results_list_each_change_under_its_own_operation(boot_hosts, mirror):
    fresh, converged, no_alias, edited = boot_hosts(4, image=testhosts.TRIXIE_CONTAINERD)
    data = deploy_data(mirror, buildkit_socket_group="buildkit", nerdctl_docker_alias=True)
    deploy(inventory([converged, no_alias, edited], **data), {})
    no_alias.run("rm /etc/profile.d/nerdctl-docker-alias.sh")
    edited.run("echo '# edited by hand' >> /etc/nerdctl/nerdctl.toml && groupdel buildkit")
    entries = inventory([fresh, converged, no_alias, edited], **data)
    expected = {
        "Install nerdctl 2.4.0 and BuildKit 0.12.5 into /usr/local/bin": [fresh.name],
        "Group buildkit": sorted([fresh.name, edited.name]),
        "Directory /etc/nerdctl": [fresh.name],
        "Directory /etc/buildkit": [fresh.name],
        "Write /etc/nerdctl/nerdctl.toml": sorted([fresh.name, edited.name]),
        "Write /etc/profile.d/nerdctl-docker-alias.sh": sorted([fresh.name, no_alias.name]),
        "Write /etc/buildkit/buildkitd.toml": [fresh.name],
        "Write /etc/systemd/system/buildkit.socket": [fresh.name],
        "Write /etc/systemd/system/buildkit.service": [fresh.name],
        "Enable buildkit.socket": [fresh.name],
        "Start buildkit.socket": [fresh.name],
        "Check that BuildKit answers with the containerd worker": [fresh.name],
    }

    dry = run_pyinfra(entries, DEPLOY, dry=True, as_json=True)

    assert dry.returncode == 0, dry.output
    assert by_operation(dry.json["plan"], "hosts_with_change") == expected
    assert not any(entry.get("hosts_with_conditional_change") for entry in dry.json["plan"])

    run = run_pyinfra(entries, DEPLOY, as_json=True)

    assert run.returncode == 0, run.output
    assert by_operation(run.json["results"]["operations"], "success") == expected
    again = run_pyinfra(entries, DEPLOY, as_json=True)
    assert again.returncode == 0 and by_operation(again.json["results"]["operations"], "success") == {}


def test_dry_run_fetches_nothing_on_the_controller(boot_hosts, mirror, tmp_path):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    cache = tmp_path / "cache"
    entries = inventory([host], **deploy_data(mirror, download_on_controller=True, release_cache_dir=str(cache)))
    seen = len(mirror.requests)

    dry = run_pyinfra(entries, DEPLOY, dry=True, as_json=True)

    assert dry.returncode == 0, dry.output
    assert not cache.exists() or not any(cache.rglob("*.tar.gz"))
    assert not [path for path, _, _ in mirror.requests[seen:] if path.endswith(".tar.gz")]
    deploy(entries, {})
    assert len(list(cache.rglob("*.tar.gz"))) == 2
