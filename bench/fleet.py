"""Fleet benchmark: wall time of install_build_host against the number of hosts.

Boots N real test hosts (tests/testhosts.py) per size, serves the stand-in mirror,
and times the pyinfra CLI (time.perf_counter around the subprocess) for a first
install, a no-op rerun and an upgrade of BuildKit, with and without
download_on_controller. Counts remote commands per host (from each host's sshd
log, so pyinfra runs without --debug) and bytes served by the mirror. Prints a table, writes JSON and a PNG plot.

    .venv/bin/python bench/fleet.py --sizes 1,5,20 --out bench/results

Needs what the host tests need (root, systemd-nspawn, debootstrap); the plot needs matplotlib
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import testhosts  # noqa: E402
from conftest import deploy_data, inventory  # noqa: E402
from mirror import start_mirror  # noqa: E402
from pyinfra_cli import run_pyinfra  # noqa: E402

DEPLOY = "pyinfra_nerdctl.deploys.install_build_host"
PHASES = ("first install", "no-op rerun", "upgrade BuildKit")
FLOOR = "floor: pyinfra exec -- true"


def measure(hosts, entries, data, mirror, repeat: int = 1, operation: tuple[str, ...] = (DEPLOY,)) -> dict:
    """Run the deploy ``repeat`` times (the median wall time counts); remote commands per host
    (from sshd's log) and mirror traffic, over all repeats per run."""
    served_before = len(mirror.requests)
    logged_before = sum(host.commands_logged() for host in hosts)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run = run_pyinfra(entries, *operation, data=data)
        times.append(time.perf_counter() - start)
        if run.returncode != 0:
            raise SystemExit(f"deploy failed:\n{run.output[-3000:]}")
    seconds = statistics.median(times)
    served = mirror.requests[served_before:]
    # Each commands_logged() call is itself one logged command.
    commands = sum(host.commands_logged() for host in hosts) - logged_before - len(hosts)
    return {
        "seconds": round(seconds, 3),
        "runs": [round(t, 3) for t in times],
        "commands_per_host": round(commands / len(entries) / repeat, 2),
        "archive_fetches": sum(1 for path, status, _ in served if status == 200 and path.endswith(".tar.gz")) / repeat,
        "bytes_from_mirror": sum(size for _, _, size in served) / repeat,
    }


def bench_size(count: int, on_controller: bool, mirror, cache_dir: str) -> dict:
    rootfs = testhosts.image_dir(testhosts.TRIXIE_CONTAINERD)
    hosts = [
        testhosts.boot(f"bench-{count}-{int(on_controller)}-{i}", f"127.0.{100 + i // 250}.{1 + i % 250}", rootfs)
        for i in range(count)
    ]
    try:
        extra = {"download_on_controller": True, "release_cache_dir": cache_dir} if on_controller else {}
        entries = inventory(hosts, **extra)
        results = {}
        for phase, data in zip(
            PHASES,
            (deploy_data(mirror), deploy_data(mirror), deploy_data(mirror, buildkit_version="0.13.0")),
            strict=True,
        ):
            # A no-op rerun leaves the hosts as they were, so it can be repeated for a steadier figure.
            results[phase] = measure(hosts, entries, data, mirror, repeat=5 if phase == "no-op rerun" else 1)
        # What pyinfra itself costs: connect to every host and run one command, nothing of ours.
        results[FLOOR] = measure(hosts, entries, {}, mirror, repeat=5, operation=("exec", "--", "true"))
        return results
    finally:
        for host in hosts:
            testhosts.stop(host)


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for mode, runs in report["runs"].items():
        sizes = sorted(int(n) for n in runs)
        for phase in (*PHASES, FLOOR):
            axes.plot(sizes, [runs[str(n)][phase]["seconds"] for n in sizes], marker="o", label=f"{phase} ({mode})")
    axes.set_xlabel("hosts")
    axes.set_ylabel("wall time (s)")
    axes.set_title("install_build_host on N hosts (2 cores, loopback mirror)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def table(report: dict) -> str:
    lines = [
        "| mode | hosts | phase | wall s | commands/host | archive fetches | bytes from mirror |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, runs in report["runs"].items():
        for count in sorted(runs, key=int):
            for phase, row in runs[count].items():
                lines.append(
                    f"| {mode} | {count} | {phase} | {row['seconds']:.2f} | {row['commands_per_host']:g} | "
                    f"{row['archive_fetches']:g} | {row['bytes_from_mirror']:g} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,5,20", help="host counts, comma separated")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    testhosts.reap_leftovers()
    mirror = start_mirror()
    report: dict = {"sizes": sizes, "runs": {"hosts download": {}, "download_on_controller": {}}}
    try:
        for on_controller in (False, True):
            mode = "download_on_controller" if on_controller else "hosts download"
            for count in sizes:
                with tempfile.TemporaryDirectory() as cache_dir:
                    report["runs"][mode][str(count)] = bench_size(count, on_controller, mirror, cache_dir)
                print(f"{mode}, {count} hosts: {report['runs'][mode][str(count)]}", file=sys.stderr)
    finally:
        mirror.stop()
    (args.out / "fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / "fleet.png")
    print(table(report))


if __name__ == "__main__":
    main()
