"""The recorded versions: a binary is executed only when its record is missing or no longer matches the file."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, deploy, plan
from pyinfra_cli import run_pyinfra
from pyinfra_nerdctl.deploys.changes import plan_changes
from pyinfra_nerdctl.deploys.operations import VERSION_FUNCTIONS
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL
from pyinfra_nerdctl.deploys.settings import resolve_settings
from pyinfra_nerdctl.facts.versions import VERSION_KEY, parse_executed, parse_nerdctl_version, version_command
from pyinfra_nerdctl.layout import BINARY_VERSIONS
from states import converged_state


def _binary(path: Path, version: str, calls: Path) -> None:
    path.write_text(f"#!/bin/sh\necho run >> {shlex.quote(str(calls))}\necho 'nerdctl version {version}'\n")
    path.chmod(0o755)


def _sh(script: str) -> list[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()


def _remember(binary: Path, record: Path) -> None:
    _sh(
        f"versions={shlex.quote(str(record))}\nversion_key={shlex.quote(VERSION_KEY)}\n"
        f"{VERSION_FUNCTIONS}\nremember {shlex.quote(str(binary))}\n"
    )


def _calls(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_a_recorded_binary_is_not_executed_until_it_changes(tmp_path):
    binary, record, calls = tmp_path / "bin" / "nerdctl", tmp_path / "versions", tmp_path / "calls"
    binary.parent.mkdir()
    _binary(binary, "2.4.0", calls)
    command = version_command(str(binary), record=str(record))

    missing = _sh(command)
    assert parse_nerdctl_version(missing) == "2.4.0" and parse_executed(missing) == (str(binary),)
    _remember(binary, record)
    assert _calls(calls) == 2  # the fact, then the record
    recorded = _sh(command)
    assert parse_nerdctl_version(recorded) == "2.4.0" and parse_executed(recorded) == ()
    assert _calls(calls) == 2

    # Replaced by hand (a new file moved over it): read afresh, the new version.
    replacement = tmp_path / "bin" / "new"
    _binary(replacement, "2.4.1", calls)
    replacement.rename(binary)
    replaced = _sh(command)
    assert parse_nerdctl_version(replaced) == "2.4.1" and parse_executed(replaced) == (str(binary),)


def test_an_edited_binary_in_place_is_read_afresh(tmp_path):
    binary, record, calls = tmp_path / "nerdctl", tmp_path / "versions", tmp_path / "calls"
    _binary(binary, "2.4.0", calls)
    _remember(binary, record)
    stat = binary.stat()
    # Same inode, size and modification time: only the change time tells.
    with open(binary, "r+b") as handle:
        handle.write(handle.read())
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert parse_executed(_sh(version_command(str(binary), record=str(record)))) == (str(binary),)


def test_a_missing_or_unreadable_record_falls_back_to_executing(tmp_path):
    binary, record, calls = tmp_path / "nerdctl", tmp_path / "versions", tmp_path / "calls"
    _binary(binary, "2.4.0", calls)
    assert parse_executed(_sh(version_command(str(binary), record=str(record)))) == (str(binary),)
    record.mkdir()  # not a file: unreadable as a record
    lines = _sh(version_command(str(binary), record=str(record)) + " 2>/dev/null")
    assert parse_nerdctl_version(lines) == "2.4.0" and parse_executed(lines) == (str(binary),)


def test_a_record_of_another_path_is_not_used(tmp_path):
    binary, other, record, calls = tmp_path / "nerdctl", tmp_path / "other", tmp_path / "versions", tmp_path / "calls"
    _binary(binary, "2.4.0", calls)
    _remember(binary, record)
    os.link(binary, other)  # same inode and times, another path

    assert parse_executed(_sh(version_command(str(other), record=str(record)))) == (str(other),)


def test_executed_binaries_are_recorded_unless_the_run_installs_them():
    settings = resolve_settings({}.get, {"nerdctl_version": "2.4.0", "buildkit_version": "0.12.5"})
    executed = ("/usr/local/bin/nerdctl", "/usr/local/bin/buildkitd")
    converged = {**converged_state(settings), "versions_executed": executed}
    assert plan_changes(settings, converged, (NERDCTL, BUILDKIT)).remember_versions == executed

    changes = plan_changes(settings, {**converged, "nerdctl": "2.3.0"}, (NERDCTL, BUILDKIT))
    # buildkitd stays in place (set there by hand, as a recipe does): recorded in this run, not the next.
    assert changes.outdated == (NERDCTL,) and changes.remember_versions == ("/usr/local/bin/buildkitd",)
    changes = plan_changes(settings, {**converged, "nerdctl": "2.3.0", "buildkit": {"buildkitd": "0.11.0", "buildctl": "0.11.0"}}, (NERDCTL, BUILDKIT))
    assert changes.outdated == (NERDCTL, BUILDKIT) and changes.remember_versions == ()
    assert plan_changes(settings, converged_state(settings), (NERDCTL, BUILDKIT)).remember_versions == ()


WRAPPER = """#!/bin/sh
echo "$0 $*" >> /root/calls
exec "$0.real" "$@"
"""


@pytest.mark.hosts
def test_binaries_replaced_by_hand_are_read_afresh_then_a_converged_host_executes_none(
    boot_hosts, mirror, real_buildkit
):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    data = deploy_data(mirror, buildkit_version=real_buildkit.version, buildkit_sha256=real_buildkit.sha256)
    entries = inventory([host], **data)
    deploy(entries, {})
    recorded = host.run(f"cut -d'|' -f1 {BINARY_VERSIONS}").stdout.split()
    assert sorted(recorded) == [f"/usr/local/bin/{name}" for name in ("buildctl", "buildkitd", "nerdctl")]
    # By hand: each binary becomes a wrapper that logs its calls, then runs the real one.
    for name in ("buildkitd", "buildctl", "nerdctl"):
        path = f"/usr/local/bin/{name}"
        host.run(f"mv {path} {path}.real && printf '%s' {shlex.quote(WRAPPER)} > {path} && chmod 755 {path}")

    assert plan(entries, {}) == {
        host.name: ["Install the nerdctl and BuildKit build host | Record the versions of the installed binaries"]
    }
    assert host.run("grep -c -- --version /root/calls").stdout.strip() == "3"  # the plan's fact read them afresh
    deploy(entries, {})
    calls = host.run("grep -c -- --version /root/calls").stdout.strip()

    rerun = run_pyinfra(entries, DEPLOY, as_json=True)

    assert rerun.returncode == 0 and rerun.changes_made() == {}, rerun.output
    assert host.run("grep -c -- --version /root/calls").stdout.strip() == calls
    versions = host.run(f"cut -d'|' -f3 {BINARY_VERSIONS}").stdout
    assert f"v{real_buildkit.version}" in versions and "nerdctl version 2.4.0" in versions
