"""Fixtures: the stand-in release mirror and real systemd test hosts."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import testhosts  # noqa: E402
from mirror import Mirror, buildkit_archive, buildkit_path, sha256, start_mirror  # noqa: E402

HOST_TOOLS = ("systemd-nspawn", "debootstrap", "zstd", "ssh", "ssh-keygen")
_address_counter = iter(range(1, 250 * 250))


def _next_address() -> str:
    # 127.S.X.Y (S: this session's slot) with X >= 10 stays clear of 127.0.0.1 (the mirror)
    # and 127.0.1.1 (Debian's hostname).
    index = next(_address_counter)
    return f"127.{testhosts.SLOT}.{10 + index // 250}.{1 + index % 250}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    if not missing:
        return
    if os.environ.get("CI"):
        return  # in CI a missing tool must fail the host tests, not skip them
    skip = pytest.mark.skip(reason=f"host tests need {', '.join(missing)}")
    for item in items:
        if "hosts" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def mirror() -> Iterator[Mirror]:
    """The stand-in GitHub release mirror on 127.0.0.1."""
    server = start_mirror()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset_mirror(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "mirror" in request.fixturenames:
        request.getfixturevalue("mirror").reset()


REAL_BUILDKIT_VARIABLE = "PYINFRA_NERDCTL_REAL_BUILDKIT"
REAL_BUILDKIT_NAME = re.compile(r"^buildkit-v(\d+\.\d+\.\d+)\.linux-amd64\.tar\.gz$")


@dataclass(frozen=True)
class RealBuildkit:
    """A real BuildKit release archive, served by the mirror at its upstream path."""

    version: str
    sha256: str


@pytest.fixture
def real_buildkit(mirror: Mirror) -> RealBuildkit:
    """The archive named by ``$PYINFRA_NERDCTL_REAL_BUILDKIT`` on the mirror; the test skips when it is unset."""
    value = os.environ.get(REAL_BUILDKIT_VARIABLE)
    if not value:
        pytest.skip(
            f"{REAL_BUILDKIT_VARIABLE} is unset: point it at a real buildkit-vX.Y.Z.linux-amd64.tar.gz "
            "(.ci/run uses ../shared/real-buildkit/) to run the real-BuildKit tests"
        )
    path = Path(value)
    match = REAL_BUILDKIT_NAME.match(path.name)
    if not match or not path.is_file():
        pytest.fail(f"{REAL_BUILDKIT_VARIABLE}={value} is not a buildkit-vX.Y.Z.linux-amd64.tar.gz file")
    data = path.read_bytes()
    mirror.serve(buildkit_path(match.group(1), path.name), data)
    return RealBuildkit(match.group(1), sha256(data))


@pytest.fixture(scope="session")
def _reaped() -> None:
    testhosts.reap_leftovers()


@pytest.fixture
def boot_hosts(_reaped: None, request: pytest.FixtureRequest) -> Iterator[Callable[..., list[testhosts.TestHost]]]:
    """Boot N hosts from an image (``testhosts.BOOKWORM`` unless told); all stop at teardown.

    Options go to ``testhosts.boot`` (``extra_args``, ``systemd``).
    """
    booted: list[testhosts.TestHost] = []

    def boot(
        count: int = 1, image: testhosts.ImageRecipe = testhosts.BOOKWORM, **options: object
    ) -> list[testhosts.TestHost]:
        rootfs = testhosts.image_dir(image)
        prefix = request.node.name.replace("[", "-").replace("]", "")[:20].strip("-_")
        for _ in range(count):
            name = f"{prefix}-{len(booted)}".replace("_", "-")
            booted.append(testhosts.boot(name, _next_address(), rootfs, **options))
        return booted[-count:]

    yield boot
    for host in booted:
        testhosts.stop(host)


def inventory(hosts: list[testhosts.TestHost], **data: object) -> list[tuple[str, dict]]:
    """``(name, data)`` inventory entries for ``hosts``, with extra host data."""
    return [(host.name, {**host.inventory_data(), **data}) for host in hosts]


def deploy_data(
    mirror: Mirror, nerdctl_version: str = "2.4.0", buildkit_version: str = "0.12.5", **data: object
) -> dict:
    """Host data for a deploy from the stand-in mirror.

    nerdctl versions outside the shipped table are verified through the release's
    SHA256SUMS; BuildKit's stand-in archive is pinned (its provenance is tested in test_trust.py).
    """
    return {
        "github_url": mirror.url,
        "nerdctl_version": nerdctl_version,
        "buildkit_version": buildkit_version,
        "buildkit_sha256": sha256(buildkit_archive(buildkit_version, "amd64")),
        **data,
    }
