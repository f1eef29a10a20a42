"""``--diff`` shows what a managed file will become, and reads nothing more on a converged host."""

from __future__ import annotations

import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, deploy
from pyinfra_cli import run_pyinfra
from test_fleet import remote_commands

pytestmark = pytest.mark.hosts


def test_diff_shows_the_config_change_and_costs_nothing_when_converged(boot_hosts, mirror):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    hosts = inventory([host], **deploy_data(mirror))
    deploy(hosts, {})

    converged = run_pyinfra(hosts, DEPLOY, dry=True, extra_args=("--diff", "--debug"))
    assert converged.returncode == 0, converged.output
    assert remote_commands(converged) == {host.name: 1} and "Will modify" not in converged.output

    for dry in (True, False):  # the plan and the real run both show it
        run = run_pyinfra(hosts, DEPLOY, data={"containerd_namespace": "k8s.io"}, dry=dry, extra_args=("--diff",))
        assert run.returncode == 0, run.output
        assert "Will modify /etc/nerdctl/nerdctl.toml" in run.output, run.output
        assert '- namespace = "default"' in run.output.replace("-namespace", "- namespace")
        assert '+ namespace = "k8s.io"' in run.output.replace("+namespace", "+ namespace")
        assert "Will modify /etc/buildkit/buildkitd.toml" in run.output
    assert 'namespace = "k8s.io"' in host.run("cat /etc/nerdctl/nerdctl.toml").stdout
