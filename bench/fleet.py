"""Fleet benchmark: wall time of install_build_host against the number of hosts, with archives of real size.

Boots N real test hosts (tests/testhosts.py) per size, serves the stand-in mirror,
and times the pyinfra CLI (time.perf_counter around the subprocess) for a first
install, a no-op rerun and an upgrade, with the hosts downloading and with
download_on_controller. Beside each first install it measures the floor in the same
run: the hosts fetching (or receiving over plain OpenSSH ``ssh``), hashing and
unpacking the same archives, all hosts in parallel, nothing of pyinfra's. Counts remote
commands per host (from each host's sshd log, so pyinfra runs without --debug) and
bytes served by the mirror. Prints a table, writes JSON and a PNG plot.

Archives have their real sizes unless ``--small``: the real BuildKit archive from
``$PYINFRA_NERDCTL_REAL_BUILDKIT`` when set (../shared/real-buildkit/ has one), else a
stand-in; every stand-in padded with incompressible bytes to its release's size
(nerdctl 10 MB, BuildKit 64 MB, nerdctl-full 250 MB).

    PYINFRA_NERDCTL_REAL_BUILDKIT=../shared/real-buildkit/buildkit-v0.32.90.linux-amd64.tar.gz \\
        .venv/bin/python bench/fleet.py --sizes 1,10 --flavors minimal,full --out bench/results

Needs what the host tests need (root, systemd-nspawn, debootstrap); the plot needs matplotlib
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import mirror as mirror_module  # noqa: E402
import testhosts  # noqa: E402
from conftest import REAL_BUILDKIT_NAME, deploy_data, inventory  # noqa: E402
from pyinfra_cli import run_pyinfra  # noqa: E402

DEPLOY = "pyinfra_nerdctl.deploys.install_build_host"
MB = 1 << 20
REAL_SIZES = {"nerdctl": 10 * MB, "buildkit": 64 * MB, "full": 250 * MB}
FIRST, NOOP, UPGRADE = "first install", "no-op rerun", "upgrade"
FLOOR = "floor: same archives over plain ssh"
PYINFRA_FLOOR = "floor: pyinfra exec -- true"
PHASES = (FLOOR, FIRST, NOOP, UPGRADE, PYINFRA_FLOOR)
# What the floor does on each host, per archive: what the install script cannot do without.
FLOOR_STEPS = 'sha256sum "$f" >/dev/null && mkdir "$f.d" && tar -xzf "$f" -C "$f.d"'


def measure(hosts, entries, data, mirror, repeat: int = 1, operation: tuple[str, ...] = (DEPLOY,)) -> dict:
    """Run the deploy ``repeat`` times (the median wall time counts); remote commands per host
    (from sshd's log) and mirror traffic, over all repeats per run."""
    served_before = len(mirror.requests)
    logged_before = sum(host.commands_logged() for host in hosts)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run = run_pyinfra(entries, *operation, data=data, timeout=900)
        times.append(time.perf_counter() - start)
        if run.returncode != 0:
            raise SystemExit(f"deploy failed:\n{run.output[-3000:]}")
    served = mirror.requests[served_before:]
    # Each commands_logged() call is itself one logged command.
    commands = sum(host.commands_logged() for host in hosts) - logged_before - len(hosts)
    return {
        "seconds": round(statistics.median(times), 3),
        "runs": [round(t, 3) for t in times],
        "commands_per_host": round(commands / len(entries) / repeat, 2),
        "archive_fetches": sum(1 for path, status, _ in served if status == 200 and path.endswith(".tar.gz")) / repeat,
        "bytes_from_mirror": sum(size for _, _, size in served) / repeat,
    }


def host_cpu_seconds(host: testhosts.TestHost) -> float:
    """CPU time of everything in ``host`` so far, from its cgroup (``usage_usec`` of the unified hierarchy)."""
    stat = (testhosts.CGROUP_ROOTS[1] / (testhosts.MACHINE_PREFIX + host.name) / "cpu.stat").read_text()
    return int(stat.split("usage_usec ", 1)[1].split()[0]) / 1e6


def controller_cpu_seconds() -> float:
    """User and system CPU of the finished child processes: the pyinfra CLI runs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_run(hosts, entries, data, operation: tuple[str, ...]) -> dict:
    """One pyinfra run: wall time, its controller CPU, and each host's CPU (mean over hosts), in seconds."""
    controller, before = controller_cpu_seconds(), [host_cpu_seconds(host) for host in hosts]
    start = time.perf_counter()
    run = run_pyinfra(entries, *operation, data=data, timeout=900)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"run failed:\n{run.output[-3000:]}")
    used = [host_cpu_seconds(host) - was for host, was in zip(hosts, before, strict=True)]
    return {"wall": wall, "controller": controller_cpu_seconds() - controller, "host": statistics.mean(used)}


def bench_noop_cpu(count: int, mirror, buildkit: dict, repeat: int) -> dict:
    """A converged no-op against ``pyinfra exec -- true`` on the same ``count`` hosts, runs interleaved:
    medians of wall time, controller CPU and host CPU (each host's cgroup) for both."""
    rootfs = testhosts.image_dir(testhosts.TRIXIE_CONTAINERD)
    hosts = [
        testhosts.boot(f"cpu-{count}-{i}", f"127.{testhosts.SLOT}.{100 + i // 250}.{1 + i % 250}", rootfs)
        for i in range(count)
    ]
    try:
        entries = inventory(hosts)
        data = flavor_data("minimal", mirror, buildkit, False)
        run_pyinfra(entries, DEPLOY, data=data, timeout=900)
        runs: dict[str, list[dict]] = {NOOP: [], PYINFRA_FLOOR: []}
        for _ in range(repeat):
            runs[NOOP].append(cpu_run(hosts, entries, data, (DEPLOY,)))
            runs[PYINFRA_FLOOR].append(cpu_run(hosts, entries, {}, ("exec", "--", "true")))
        return {
            phase: {key: round(statistics.median(run[key] for run in phase_runs), 3) for key in phase_runs[0]}
            | {"runs": phase_runs}
            for phase, phase_runs in runs.items()
        }
    finally:
        for host in hosts:
            testhosts.stop(host)


def cpu_table(report: dict) -> str:
    lines = [
        "| hosts | no-op wall | `exec -- true` wall | no-op controller CPU | `exec -- true` controller CPU | ratio "
        "| no-op host CPU | `exec -- true` host CPU | difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for count, row in sorted(report["cpu"].items(), key=lambda item: int(item[0])):
        noop, floor_ = row[NOOP], row[PYINFRA_FLOOR]
        lines.append(
            f"| {count} | {noop['wall']:.2f} s | {floor_['wall']:.2f} s | {noop['controller']:.2f} s | "
            f"{floor_['controller']:.2f} s | {noop['controller'] / floor_['controller']:.2f} | "
            f"{noop['host'] * 1000:.0f} ms | {floor_['host'] * 1000:.0f} ms | {(noop['host'] - floor_['host']) * 1000:.0f} ms |"
        )
    return "\n".join(lines)


def _ssh(host: testhosts.TestHost, command: str, stdin=None) -> None:
    subprocess.run(
        ["ssh", *testhosts.ssh_options(), f"root@{host.address}", command], stdin=stdin, check=True, timeout=900
    )


def floor(hosts, urls: list[str], archives: list[Path] | None) -> dict:
    """Every host, in parallel: fetch each archive (curl from the mirror, or ``cat`` from an OpenSSH
    upload of ``archives``), hash it and unpack it; then clean up (not timed)."""

    def one_host(host: testhosts.TestHost) -> None:
        if archives is None:
            fetches = "; ".join(
                f"f=/tmp/floor.{i}; curl -fsS -o $f {shlex.quote(url)} && {FLOOR_STEPS}" for i, url in enumerate(urls)
            )
            _ssh(host, f"set -e; {fetches}")
        else:
            for i, archive in enumerate(archives):
                with open(archive, "rb") as stdin:
                    _ssh(host, f"set -e; f=/tmp/floor.{i}; cat > $f && {FLOOR_STEPS}", stdin=stdin)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one_host, hosts))
    seconds = time.perf_counter() - start
    for host in hosts:
        _ssh(host, "rm -rf /tmp/floor.*")
    return {"seconds": round(seconds, 3), "runs": [round(seconds, 3)], "commands_per_host": len(archives or [1])}


def flavor_data(flavor: str, mirror, buildkit: dict, upgrade: bool) -> dict:
    if flavor == "full":
        return deploy_data(mirror, nerdctl_version="2.4.1" if upgrade else "2.4.0", nerdctl_flavor="full")
    return deploy_data(mirror, **({"buildkit_version": "0.33.0"} if upgrade else buildkit))


def archive_urls(flavor: str, mirror, buildkit: dict) -> list[str]:
    if flavor == "full":
        return [mirror.url + mirror_module.nerdctl_path("2.4.0", mirror_module.nerdctl_asset("2.4.0", "amd64", True))]
    return [
        mirror.url + mirror_module.nerdctl_path("2.4.0", mirror_module.nerdctl_asset("2.4.0", "amd64")),
        mirror.url
        + mirror_module.buildkit_path(
            buildkit["buildkit_version"], mirror_module.buildkit_asset(buildkit["buildkit_version"], "amd64")
        ),
    ]


# The runs: how archives reach the hosts. "controller, no GCM" is download_on_controller on SSH
# sessions that may not use AES-GCM (as against an sshd without it): what the upload cost before
# operations._prefer_aead_cipher.
MODES = {
    "hosts": "hosts download",
    "controller": "download_on_controller",
    "controller-no-gcm": "download_on_controller, no GCM",
}
NO_GCM = {"disabled_algorithms": {"ciphers": ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]}}


def bench_size(count: int, mode: str, flavor: str, mirror, buildkit: dict, work: Path) -> dict:
    image = testhosts.BOOKWORM if flavor == "full" else testhosts.TRIXIE_CONTAINERD
    rootfs = testhosts.image_dir(image)
    hosts = [
        testhosts.boot(
            f"bench-{count}-{flavor[0]}{list(MODES).index(mode)}-{i}",
            f"127.{testhosts.SLOT}.{100 + i // 250}.{1 + i % 250}",
            rootfs,
        )
        for i in range(count)
    ]
    try:
        on_controller = mode != "hosts"
        extra = {"download_on_controller": True, "release_cache_dir": str(work / "cache")} if on_controller else {}
        if mode == "controller-no-gcm":
            extra["ssh_paramiko_connect_kwargs"] = NO_GCM
        entries = inventory(hosts, **extra)
        urls = archive_urls(flavor, mirror, buildkit)
        archives = None
        if on_controller:
            archives = [work / Path(url).name for url in urls]
            for url, archive in zip(urls, archives, strict=True):
                path = url[len(mirror.url) :]
                archive.write_bytes(mirror.extra.get(path) or mirror_module.content_for(path))
        first, upgrade = flavor_data(flavor, mirror, buildkit, False), flavor_data(flavor, mirror, buildkit, True)
        return {
            FLOOR: floor(hosts, urls, archives),
            FIRST: measure(hosts, entries, first, mirror),
            # A no-op rerun leaves the hosts as they were, so it can be repeated for a steadier figure.
            NOOP: measure(hosts, entries, first, mirror, repeat=3),
            UPGRADE: measure(hosts, entries, upgrade, mirror),
            # What pyinfra itself costs: connect to every host and run one command, nothing of ours.
            PYINFRA_FLOOR: measure(hosts, entries, {}, mirror, repeat=3, operation=("exec", "--", "true")),
        }
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
    figure, axes = plt.subplots(figsize=(8, 5))
    for run_name, runs in report["runs"].items():
        sizes = sorted(int(n) for n in runs)
        for phase in (FIRST, FLOOR):
            axes.plot(sizes, [runs[str(n)][phase]["seconds"] for n in sizes], marker="o", label=f"{phase} ({run_name})")
    axes.set_xlabel("hosts")
    axes.set_ylabel("wall time (s)")
    axes.set_title("install_build_host first install vs floor (2 cores, loopback mirror, real-size archives)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def table(report: dict) -> str:
    lines = [
        "| run | hosts | floor | first install | ratio | no-op rerun | upgrade | pyinfra floor | commands/host (first, no-op, upgrade) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run_name, runs in report["runs"].items():
        for count in sorted(runs, key=int):
            row = runs[count]
            commands = ", ".join(f"{row[phase]['commands_per_host']:g}" for phase in (FIRST, NOOP, UPGRADE))
            lines.append(
                f"| {run_name} | {count} | {row[FLOOR]['seconds']:.2f} s | {row[FIRST]['seconds']:.2f} s | "
                f"{row[FIRST]['seconds'] / row[FLOOR]['seconds']:.2f} | {row[NOOP]['seconds']:.2f} s | "
                f"{row[UPGRADE]['seconds']:.2f} s | {row[PYINFRA_FLOOR]['seconds']:.2f} s | {commands} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,10", help="host counts, comma separated")
    parser.add_argument("--full-sizes", help="host counts for the full flavor (its archive is 250 MB): default --sizes")
    parser.add_argument("--flavors", default="minimal,full", help="minimal, full or both")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma separated, of: {', '.join(MODES)}")
    parser.add_argument("--small", action="store_true", help="the 4 KB stand-in archives instead of real sizes")
    parser.add_argument(
        "--noop-cpu",
        action="store_true",
        help="only the CPU of a converged no-op against `pyinfra exec -- true`, runs interleaved (--sizes, --repeat)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, with --noop-cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    full_sizes = [int(size) for size in (args.full_sizes or args.sizes).split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    real_buildkit = os.environ.get("PYINFRA_NERDCTL_REAL_BUILDKIT")
    buildkit = {"buildkit_version": "0.12.5"}  # deploy data for the first install
    mirror = mirror_module.start_mirror()
    if not args.small:
        mirror_module.pad_archives(**REAL_SIZES)
        if real_buildkit:
            path = Path(real_buildkit)
            version = REAL_BUILDKIT_NAME.match(path.name)[1]
            data = path.read_bytes()
            mirror.serve(mirror_module.buildkit_path(version, path.name), data)
            buildkit = {"buildkit_version": version, "buildkit_sha256": mirror_module.sha256(data)}
    for version in ("2.4.0", "2.4.1"):  # built before any clock runs (SHA256SUMS needs every archive)
        mirror_module.nerdctl_sums(version)
    for version in ("0.12.5", "0.33.0"):
        mirror_module.buildkit_archive(version, "amd64")
    testhosts.reap_leftovers()
    report: dict = {
        "sizes": sizes,
        "archives": "small stand-ins" if args.small else {"padded to": REAL_SIZES, "real BuildKit": real_buildkit},
        "buildkit_version": buildkit["buildkit_version"],
        "runs": {},
    }
    if args.noop_cpu:
        try:
            report["cpu"] = {str(count): bench_noop_cpu(count, mirror, buildkit, args.repeat) for count in sizes}
        finally:
            mirror.stop()
        (args.out / "noop-cpu.json").write_text(json.dumps(report, indent=2) + "\n")
        print(cpu_table(report))
        return
    try:
        for flavor in args.flavors.split(","):
            for mode in args.modes.split(","):
                run_name = f"{flavor}, {MODES[mode]}"
                report["runs"][run_name] = {}
                for count in full_sizes if flavor == "full" else sizes:
                    with tempfile.TemporaryDirectory() as work:
                        result = bench_size(count, mode, flavor, mirror, buildkit, Path(work))
                    report["runs"][run_name][str(count)] = result
                    print(f"{run_name}, {count} hosts: {json.dumps(result)}", file=sys.stderr, flush=True)
    finally:
        mirror.stop()
    name = "fleet-small" if args.small else "fleet"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out / f"{name}.png")
    print(table(report))


if __name__ == "__main__":
    main()
