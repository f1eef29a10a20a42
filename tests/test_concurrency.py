"""Two runs at once on one host, and temporary files no other local user can prepare or reach."""

from __future__ import annotations

import threading
import time

import mirror as mirror_module
import pytest
import testhosts
from conftest import deploy_data, inventory
from hostcheck import DEPLOY, client_call, deploy
from pyinfra_cli import run_pyinfra
from pyinfra_nerdctl.layout import LOCK_FILE

pytestmark = pytest.mark.hosts

PRIVATE = "/var/lib/pyinfra-nerdctl"


def test_two_runs_at_once_both_succeed_and_the_host_ends_on_one_version(boot_hosts, mirror, tmp_path):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    hosts = inventory([host])
    versions = {
        "old": deploy_data(mirror),
        "new": deploy_data(
            mirror,
            nerdctl_version="2.4.1",
            buildkit_version="0.13.0",
            download_on_controller=True,
            release_cache_dir=str(tmp_path),
        ),
    }
    runs = {}

    def run(label: str) -> None:
        runs[label] = run_pyinfra(hosts, DEPLOY, data=versions[label])

    threads = [threading.Thread(target=run, args=(label,)) for label in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for label, result in runs.items():
        assert result.returncode == 0, (label, result.output)
    nerdctl = host.run("/usr/local/bin/nerdctl --version").stdout
    winner = "new" if "2.4.1" in nerdctl else "old"
    buildkit = client_call(host)["buildkitd.version"]
    assert buildkit == versions[winner]["buildkit_version"], (nerdctl, buildkit)
    assert host.run(f"ls -A {PRIVATE}/work {PRIVATE}/uploads; ls -a /usr/local/bin").stdout.count(".pyinfra") == 0
    third = run_pyinfra(hosts, DEPLOY, data=versions[winner], as_json=True)
    assert third.returncode == 0 and third.json["results"]["totals"]["success"] == 0, third.output


# Fault injection: the download of BuildKit 0.12.5 waits until the test lets it go on.
HELD_CURL = """#!/bin/sh
case "$*" in *buildkit-v0.12.5*)
  touch /run/curl-held
  while [ ! -e /run/curl-go-on ]; do sleep 0.1; done
;; esac
exec /usr/bin/curl "$@"
"""
# The processes waiting for the host's lock (one line per process: the scripts' own lines start with flock too).
LOCK_WAITERS = (
    "for f in /proc/[0-9]*/cmdline; do tr '\\0\\n' '  ' < $f; echo; done 2>/dev/null | grep -c '^flock -w' || true"
)


def until(condition, what: str, runs: dict) -> None:
    """Wait for ``condition`` while the runs started go on."""
    deadline = time.monotonic() + 60  # a bound that proves a hang, not a speed
    while not condition():
        assert time.monotonic() < deadline and not runs, (what, runs)
        time.sleep(0.1)


def test_a_run_failing_on_a_fresh_host_takes_its_folders_back_under_the_lock_and_the_waiting_run_converges(
    boot_hosts, mirror
):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    host.run(f"cat > /usr/local/sbin/curl <<'EOF'\n{HELD_CURL}EOF\nchmod 755 /usr/local/sbin/curl")
    runs = {}
    data = {
        "failing": deploy_data(mirror, buildkit_sha256="0" * 64),
        "waiting": deploy_data(mirror, nerdctl_version="2.4.1", buildkit_version="0.13.0"),
    }

    def run(label: str) -> None:
        runs[label] = run_pyinfra(inventory([host], **data[label]), DEPLOY)

    failing = threading.Thread(target=run, args=("failing",))
    failing.start()
    until(lambda: host.run("test -e /run/curl-held", check=False).returncode == 0, "the failing run's download", runs)
    waiting = threading.Thread(target=run, args=("waiting",))
    waiting.start()
    until(lambda: host.run(LOCK_WAITERS).stdout.strip() == "1", "the second run waiting for the lock", runs)
    # It made nothing before the lock; the failing run made root's folders, and takes them back.
    assert host.run(f"ls -A {PRIVATE}").stdout.split() == ["uploads", "work"]
    host.run("touch /run/curl-go-on")
    failing.join()
    waiting.join()

    assert runs["failing"].returncode != 0 and "SHA-256 mismatch" in runs["failing"].output, runs["failing"].output
    assert runs["waiting"].returncode == 0, runs["waiting"].output
    assert client_call(host)["buildkitd.version"] == "0.13.0"
    third = run_pyinfra(inventory([host], **data["waiting"]), DEPLOY, as_json=True)
    assert third.returncode == 0 and third.json["results"]["totals"]["success"] == 0, third.output


def _two_runs_at_once(host: testhosts.TestHost, data: dict[str, dict]) -> dict:
    """Both runs of ``data`` started while the test holds the host's lock, so that they claim their uploads together."""
    host.run(f"setsid -f flock {LOCK_FILE} sleep 121 >/dev/null 2>&1 < /dev/null")
    runs: dict = {}

    def run(label: str) -> None:
        runs[label] = run_pyinfra(inventory([host], **data[label]), DEPLOY)

    threads = [threading.Thread(target=run, args=(label,)) for label in data]
    for thread in threads:
        thread.start()
    until(lambda: host.run(LOCK_WAITERS).stdout.strip() == "2", "both runs waiting for the lock", runs)
    host.run("pkill -f 'sleep 121'")
    for thread in threads:
        thread.join()
    return runs


def test_runs_uploading_at_once_on_a_fresh_host_take_its_folders_back_only_when_all_failed(
    boot_hosts, mirror, tmp_path
):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    good = deploy_data(mirror, download_on_controller=True, release_cache_dir=str(tmp_path))
    bad = {**good, "bin_dir": "/proc/pyinfra-bin"}

    runs = _two_runs_at_once(host, {"first": bad, "second": bad})

    for result in runs.values():
        assert result.returncode != 0 and "cannot create bin_dir /proc/pyinfra-bin" in result.output, result.output
    assert host.run(f"test -e {PRIVATE}", check=False).returncode == 1

    runs = _two_runs_at_once(host, {"failing": bad, "converging": good})

    assert runs["failing"].returncode != 0, runs["failing"].output
    assert runs["converging"].returncode == 0, runs["converging"].output
    assert client_call(host)["buildkitd.version"] == "0.12.5"
    assert host.run(f"ls -A {PRIVATE}/work {PRIVATE}/uploads").stdout.split() == [
        f"{PRIVATE}/uploads:",
        f"{PRIVATE}/work:",
    ]
    third = run_pyinfra(inventory([host], **good), DEPLOY, as_json=True)
    assert third.returncode == 0 and third.json["results"]["totals"]["success"] == 0, third.output


def test_a_run_waits_for_the_lock_a_bounded_time_and_says_so(boot_hosts, mirror):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    hosts = inventory([host], **deploy_data(mirror))
    deploy(hosts, {})
    host.run(f"setsid -f flock {LOCK_FILE} sleep 120 >/dev/null 2>&1 < /dev/null")
    before = host.run("ls -l --time-style=full-iso /usr/local/bin").stdout

    run = run_pyinfra(hosts, DEPLOY, data={"nerdctl_version": "2.4.1", "host_lock_wait": "2"})

    assert run.returncode != 0
    assert f"another pyinfra-nerdctl run on this host held {LOCK_FILE} for 2 s" in run.output, run.output
    assert host.run("ls -l --time-style=full-iso /usr/local/bin").stdout == before
    host.run("pkill -f 'sleep 120'")
    deploy(hosts, {"nerdctl_version": "2.4.1"})
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.4.1\n"


def test_files_prepared_at_the_old_temporary_names_are_neither_followed_nor_used(boot_hosts, mirror, tmp_path):
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    nerdctl_sha = mirror_module.sha256(mirror_module.nerdctl_archive("2.4.0", "amd64"))
    user = testhosts.OPERATOR
    prepared = (
        f"ln -s /root/planted /tmp/.pyinfra-nerdctl-upload.{nerdctl_sha} && "
        "mkdir /tmp/.pyinfra-nerdctl.evil && echo mine > /tmp/.pyinfra-nerdctl.evil/file && "
        "ln -s /usr/local/bin /tmp/.pyinfra-nerdctl.link"
    )
    host.run(f"su {user} -c '{prepared}'")
    listing = "ls -la /tmp/.pyinfra-nerdctl* /tmp/.pyinfra-nerdctl.evil"
    before = host.run(listing).stdout
    hosts = inventory([host], **deploy_data(mirror, download_on_controller=True, release_cache_dir=str(tmp_path)))

    deploy(hosts, {})

    assert host.run(listing).stdout == before
    assert host.run("test -e /root/planted", check=False).returncode == 1
    assert host.run(f"stat -c '%a %U' {PRIVATE} {PRIVATE}/work {PRIVATE}/uploads").stdout == "700 root\n" * 3
    assert host.run(f"stat -c '%a %U' {LOCK_FILE}").stdout == "600 root\n"  # no other user can hold it
    assert client_call(host)["buildkitd.version"] == "0.12.5"
