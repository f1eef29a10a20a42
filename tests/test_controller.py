"""The controller side of air-gapped delivery: verified fetches and the prefetch command."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import mirror as mirror_module
import pytest
from pyinfra_nerdctl.deploys.controller import fetch_verified, remove_stale_partials
from pyinfra_nerdctl.deploys.releases import ReleaseError


def test_fetch_verified_keeps_nothing_that_does_not_match(mirror, tmp_path):
    url = mirror.url + mirror_module.buildkit_path("0.12.5", mirror_module.buildkit_asset("0.12.5", "amd64"))
    target = tmp_path / "cache" / "archive.tar.gz"
    with pytest.raises(ReleaseError, match="SHA-256 mismatch"):
        fetch_verified(url, "0" * 64, target)
    assert not any((tmp_path / "cache").iterdir())
    good = mirror_module.sha256(mirror_module.buildkit_archive("0.12.5", "amd64"))
    assert fetch_verified(url, good, target).read_bytes() == mirror_module.buildkit_archive("0.12.5", "amd64")
    mirror.fail("500")
    with pytest.raises(ReleaseError, match="HTTP 500"):
        fetch_verified(url + "?again", good, tmp_path / "other.tar.gz")


def test_prefetch_refuses_what_it_cannot_verify(mirror, tmp_path):
    mirror.fail("404", ".provenance.json")
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyinfra_nerdctl.deploys.controller",
            str(tmp_path),
            "--github-url",
            mirror.url,
            "--buildkit",
            "0.12.6",
            "--arch",
            "amd64",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "its provenance cannot be read" in refused.stderr and "pin it with buildkit_sha256" in refused.stderr
    assert not any(tmp_path.rglob("*.tar.gz"))


def test_stale_partials_of_killed_fetches_go_and_live_ones_stay(tmp_path):
    folder = tmp_path / ("0" * 64)
    folder.mkdir()
    dead = _dead_pid()
    killed = folder / f".buildkit-v0.32.90.linux-amd64.tar.gz.{dead}.partial"
    live = folder / f".buildkit-v0.32.90.linux-amd64.tar.gz.{os.getpid()}.partial"
    forgotten = folder / f".nerdctl-2.4.0-linux-amd64.tar.gz.{os.getpid()}.partial"
    just_killed = folder / f".nerdctl-2.4.1-linux-amd64.tar.gz.{dead}.partial"
    archive = folder / "buildkit-v0.32.90.linux-amd64.tar.gz"
    for path in (killed, live, forgotten, just_killed, archive):
        path.write_bytes(b"x")
    now = time.time()
    for path, age in ((killed, 120), (live, 120), (forgotten, 2 * 3600), (archive, 2 * 3600)):
        os.utime(path, (now - age, now - age))

    assert sorted(remove_stale_partials(str(tmp_path), now)) == sorted([killed, forgotten])
    assert sorted(path.name for path in folder.iterdir()) == sorted([live.name, just_killed.name, archive.name])


def _dead_pid() -> int:
    """A pid that no process has: one that just exited."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
