"""Every pyinfra 3.x from the oldest supported one: the range, and a real install on the pyinfra at hand.

.ci/run runs this file in a second virtualenv holding the oldest supported pyinfra, as
well as with the newest in the main one. The host test reads pyinfra's text output
(``--json`` only exists from 3.9 on) and the hosts themselves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, boot_containerd_host, client_call, mtimes, unit_state
from packaging.requirements import Requirement
from pyinfra_cli import PYINFRA_VERSION, run_pyinfra

ROOT = Path(__file__).resolve().parent.parent
REMOVE = "pyinfra_nerdctl.deploys.remove_build_host"


def pyinfra_requirement() -> Requirement:
    (line,) = re.findall(r'"(pyinfra[<>=!~][^"]*)"', (ROOT / "pyproject.toml").read_text())
    return Requirement(line)


def oldest_supported() -> str:
    (floor,) = [spec.version for spec in pyinfra_requirement().specifier if spec.operator == ">="]
    return floor


def test_every_pyinfra_3_is_supported():
    specifier = pyinfra_requirement().specifier
    assert oldest_supported() == "3.0"
    assert all(version in specifier for version in ("3.0", "3.0.2", "3.5.1", "3.10.0", "3.99"))
    assert not any(version in specifier for version in ("2.9.2", "4.0"))
    assert PYINFRA_VERSION in specifier


def test_ci_runs_the_oldest_supported_pyinfra_too():
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"pyinfra=={oldest_supported()}" in ci
    assert "tests/test_compat.py" in ci


def test_readme_names_the_supported_versions():
    assert f"pyinfra {oldest_supported()} or newer, below 4" in (ROOT / "README.md").read_text()


@pytest.mark.hosts
def test_install_rerun_facts_and_removal_on_this_pyinfra(boot_hosts, mirror):
    host = boot_containerd_host(boot_hosts)
    hosts = inventory([host], **deploy_data(mirror))

    first = run_pyinfra(hosts, DEPLOY)

    assert first.returncode == 0, first.output
    assert sum(counts["success"] for counts in first.results().values()) > 0, first.output
    assert client_call(host)["buildkitd.version"] == "0.12.5"
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.0\n"

    before = (mtimes(host), unit_state(host, "buildkit.socket"), unit_state(host, "buildkit.service"))
    commands_before = host.commands_logged()
    rerun = run_pyinfra(hosts, DEPLOY)
    assert rerun.returncode == 0, rerun.output
    # A converged host calls no operation at all (the CLI skips idle steps): nothing may have changed.
    assert not any(counts["success"] for counts in rerun.results().values()), rerun.output
    assert host.commands_logged() - commands_before == 2  # the one state fact, and this count itself
    assert (mtimes(host), unit_state(host, "buildkit.socket"), unit_state(host, "buildkit.service")) == before

    facts = run_pyinfra(hosts, "fact", "pyinfra_nerdctl.facts.BuildkitVersion")
    assert facts.returncode == 0, facts.output
    assert facts.facts("pyinfra_nerdctl.facts.BuildkitVersion") == {
        host.name: {"buildkitd": "0.12.5", "buildctl": "0.12.5"}
    }

    removal = run_pyinfra(hosts, REMOVE)
    assert removal.returncode == 0, removal.output
    assert not host.run("ls -A /usr/local/bin").stdout
    assert unit_state(host, "buildkit.socket")["ActiveState"] == "inactive"
    again = run_pyinfra(hosts, REMOVE)
    assert again.returncode == 0 and not any(counts["success"] for counts in again.results().values()), again.output
