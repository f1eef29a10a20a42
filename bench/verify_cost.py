"""What the check after a change costs per changed host: the same buildkitd.toml change with the check on and off.

Boots N real-build hosts (tests/testhosts.py, the trixie image with real containerd), installs
the real BuildKit archive named by PYINFRA_NERDCTL_REAL_BUILDKIT from the stand-in mirror, starts
buildkitd, then changes buildkitd.toml (``[history] maxEntries``) ``--repeat`` times with
``buildkit_verify`` on and as often with it off, interleaved, once with buildkitd running before
the change (the deploy restarts it) and once with it stopped (only the check starts it). Prints
the median wall times, their difference, and remote commands per host.

    PYINFRA_NERDCTL_REAL_BUILDKIT=../shared/real-buildkit/buildkit-v0.32.90.linux-amd64.tar.gz \\
        .venv/bin/python bench/verify_cost.py --hosts 1 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import testhosts  # noqa: E402
from conftest import REAL_BUILDKIT_NAME, REAL_BUILDKIT_VARIABLE, deploy_data, inventory  # noqa: E402
from mirror import buildkit_path, sha256, start_mirror  # noqa: E402
from pyinfra_cli import run_pyinfra  # noqa: E402

DEPLOY = "pyinfra_nerdctl.deploys.install_build_host"


def timed_change(
    hosts, entries, data: dict, entries_count: int, verify: bool, running: bool
) -> tuple[float, float]:
    """One buildkitd.toml change on every host, buildkitd ``running`` or stopped: wall seconds, commands per host."""
    for host in hosts:
        host.run("/usr/local/bin/buildctl debug workers >/dev/null" if running else "systemctl stop buildkit.service")
    logged = sum(host.commands_logged() for host in hosts)
    config = {"history": {"maxEntries": entries_count}}
    start = time.perf_counter()
    run = run_pyinfra(
        entries, DEPLOY, data={**data, "buildkitd_config": json.dumps(config), "buildkit_verify": str(verify).lower()}
    )
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"deploy failed:\n{run.output[-3000:]}")
    commands = sum(host.commands_logged() for host in hosts) - logged - len(hosts)
    return seconds, commands / len(hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    archive = Path(os.environ.get(REAL_BUILDKIT_VARIABLE, ""))
    match = REAL_BUILDKIT_NAME.match(archive.name)
    if not match or not archive.is_file():
        raise SystemExit(f"set {REAL_BUILDKIT_VARIABLE} to a real buildkit-vX.Y.Z.linux-amd64.tar.gz")
    testhosts.reap_leftovers()
    mirror = start_mirror()
    data_bytes = archive.read_bytes()
    mirror.serve(buildkit_path(match.group(1), archive.name), data_bytes)
    rootfs = testhosts.image_dir(testhosts.TRIXIE_CONTAINERD)
    hosts = [
        testhosts.boot(f"verify-cost-{i}", f"127.{testhosts.SLOT}.200.{i + 1}", rootfs, **testhosts.REAL_BUILDS)
        for i in range(args.hosts)
    ]
    try:
        entries = inventory(hosts)
        data = deploy_data(mirror, buildkit_version=match.group(1), buildkit_sha256=sha256(data_bytes))
        first = run_pyinfra(entries, DEPLOY, data=data)
        if first.returncode != 0:
            raise SystemExit(f"first install failed:\n{first.output[-3000:]}")
        runs: dict[tuple[bool, bool], list[tuple[float, float]]] = {}
        count = 10
        for _ in range(args.repeat):
            for running in (True, False):
                for verify in (True, False):
                    count += 1
                    result = timed_change(hosts, entries, data, count, verify, running)
                    runs.setdefault((running, verify), []).append(result)
    finally:
        mirror.stop()
        for host in hosts:
            testhosts.stop(host)
    print(f"hosts: {args.hosts}, changes: {args.repeat} of each kind (median wall time of the pyinfra run)")
    for running in (True, False):
        on, off = (statistics.median(seconds for seconds, _ in runs[(running, verify)]) for verify in (True, False))
        commands = runs[(running, True)][0][1], runs[(running, False)][0][1]
        state = "buildkitd running (restarted)" if running else "buildkitd stopped (the check starts and stops it)"
        print(
            f"{state}: with the check {on:.2f} s ({commands[0]:g} commands/host), "
            f"without {off:.2f} s ({commands[1]:g}): the check costs {on - off:+.2f} s"
        )


if __name__ == "__main__":
    main()
