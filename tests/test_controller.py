"""The controller side of air-gapped delivery: verified fetches and the prefetch command."""

from __future__ import annotations

import subprocess
import sys

import mirror as mirror_module
import pytest
from pyinfra_nerdctl.deploys.controller import fetch_verified
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
    assert "BuildKit publishes no checksums: pin it" in refused.stderr
    assert not any(tmp_path.rglob("*.tar.gz"))
