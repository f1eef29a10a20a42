"""Disk (issue 22): the ``BuildkitDiskUsage`` fact's parsing on real output, ``prune_buildkit``'s checks and
options, and ``prune.sh`` run against a fake buildctl and systemctl (the real daemon: tests/test_disk_hosts.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from packaging.version import Version
from pyinfra_nerdctl.deploys.disk import disk_warnings, version_after_run
from pyinfra_nerdctl.deploys.prune import (
    PruneError,
    PruneOptions,
    prune_arguments,
    prune_body,
    prune_options,
    prune_step,
)
from pyinfra_nerdctl.deploys.settings import resolve_settings
from pyinfra_nerdctl.facts import BuildkitDiskUsage, parse_disk_usage

# Real output: the real buildkitd 0.32.90 (tests/conftest.py real_buildkit) after one Dockerfile build
# (COPY, COPY, RUN) on Debian trixie's containerd; the template is facts/disk.py's DU_TEMPLATE, the
# statfs figures `stat -f -c '%S %b %f %a' /var/lib/buildkit` beside `df -B1` (Available 6081134592).
REAL_DU = [
    "du=0 false false source.local",
    "du=4096 false false source.local",
    "du=4204 false true regular",
    "du=4262 false true regular",
    "du=2031616 false false source.local",
    "du=3129478 false true regular",
    "",
]
REAL_FS = ["fs.path=/var/lib/buildkit", "fs.blocks=4096 1542756 1484652 1484652"]
# `buildctl du` of the same cache: Shared 3.14MB, Private 2.04MB, Reclaimable 5.17MB, Total 5.17MB.


def test_the_fact_sums_the_cache_as_buildctl_du_does_and_measures_the_file_system():
    usage = parse_disk_usage([*REAL_FS, "du.answered", *REAL_DU])
    assert usage["cache"] == {
        "total": 5173656,
        "reclaimable": 5173656,
        "shared": 3137944,
        "records": 6,
        "by_type": {"source.local": 2035712, "regular": 3137944},
    }
    assert usage["filesystem"] == {
        "path": "/var/lib/buildkit",
        "size": 4096 * 1542756,
        "free": 6081134592,
        "available": 6081134592,
    }
    assert usage["reason"] is None


def test_records_in_use_are_not_reclaimable_and_an_empty_cache_is_zero():
    usage = parse_disk_usage([*REAL_FS, "du.answered", "du=100 true false exec.cachemount", "du=7 false false "])
    cache = usage["cache"]
    assert cache is not None
    assert (cache["total"], cache["reclaimable"], cache["by_type"]) == (107, 7, {"exec.cachemount": 100, "unknown": 7})
    assert parse_disk_usage([*REAL_FS, "du.answered", ""])["cache"] == {
        "total": 0,
        "reclaimable": 0,
        "shared": 0,
        "records": 0,
        "by_type": {},
    }


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("du.inactive=buildkit.service", "buildkit.service is not running: its cache was not counted"),
        ("du.missing=/opt/bin/buildctl", "no /opt/bin/buildctl: BuildKit is not installed there"),
        ("du.unanswered=error: flag provided but not defined: -format", "BuildKit did not say its disk usage: error"),
    ],
)
def test_a_cache_not_counted_is_none_with_the_reason_and_the_file_system_still_there(line, reason):
    usage = parse_disk_usage([*REAL_FS, line])
    assert usage["cache"] is None
    assert usage["reason"] is not None and usage["reason"].startswith(reason)
    assert usage["filesystem"] is not None and usage["filesystem"]["path"] == "/var/lib/buildkit"


def test_the_fact_asks_only_an_active_service_and_measures_the_configured_root():
    command = BuildkitDiskUsage().command(root="/srv/buildkit")
    assert "dir=/srv/buildkit;" in command
    assert command.index("systemctl is-active --quiet buildkit.service") < command.index(" du --format ")


def test_options_are_checked_to_seconds_and_bytes():
    options = prune_options(
        all="yes", keep_duration="1d12h", keep_storage="10GB", keep_storage_min=1000, free_storage="512mib"
    )
    assert options == PruneOptions(True, 129600, 10 * 2**30, 1000, 512 * 2**20)
    assert prune_options() == PruneOptions()
    assert prune_options(keep_duration=3600).keep_duration == 3600


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"keep_duration": "-1h"}, "keep_duration='-1h' is not a duration"),
        ({"keep_duration": "two days"}, "keep_duration='two days' is not a duration"),
        ({"keep_storage": -5}, "keep_storage=-5 is not a size"),
        ({"keep_storage": "10 gigs"}, "keep_storage='10 gigs' is not a size"),
        ({"free_storage": "20%"}, "free_storage='20%': a percentage of the disk is for buildkitd.toml"),
        ({"all": "maybe"}, "all='maybe' is not a yes/no value"),
        ({"keep_bytes": "1GB"}, "unknown prune option 'keep_bytes'"),
    ],
)
def test_a_bad_value_is_one_error_naming_it(given, message):
    with pytest.raises(PruneError) as error:
        prune_options(**given)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_arguments_in_buildctl_units_and_the_freed_records_counted():
    options = PruneOptions(True, 172800, 10 * 2**30, 0, 0)
    assert prune_arguments(options, Version("0.32.2")) == [
        "--all",
        "--keep-duration",
        "172800s",
        "--keep-storage",
        "10737.418240",
        "--format",
        "{{.Size}}",
    ]
    # Before 0.11 buildctl has no --format.
    assert prune_arguments(PruneOptions(), Version("0.10.6")) == []


def test_options_the_installed_buildkit_lacks_are_refused_naming_them():
    with pytest.raises(PruneError, match=r"^keep_storage_min needs BuildKit 0.17.0 or newer .* this host has 0.16.0"):
        prune_arguments(PruneOptions(keep_storage_min=1), Version("0.16.0"))
    with pytest.raises(PruneError, match=r"^free_storage alone prunes everything .* 0.20.2"):
        prune_arguments(PruneOptions(free_storage=10**9), Version("0.20.2"))
    assert "--free-storage" in prune_arguments(PruneOptions(free_storage=10**9, keep_storage=1), Version("0.20.2"))
    assert "--free-storage" in prune_arguments(PruneOptions(free_storage=10**9), Version("0.21.0"))


def test_a_host_without_buildkit_is_a_no_op_saying_why():
    settings = resolve_settings({}.get, {"bin_dir": "/opt/bin"})
    step = prune_step(settings, PruneOptions(), {"buildctl": None, "buildkitd": None})
    assert (step.commands, step.unneeded) == ((), "BuildKit is not installed in /opt/bin")
    (script,) = prune_step(settings, PruneOptions(), {"buildctl": "0.32.2", "buildkitd": "0.32.2"}).commands
    assert "flock -w 600 9" in script and "set -- --format '{{.Size}}'" in script


def test_the_older_of_buildctl_and_buildkitd_decides():
    settings = resolve_settings({}.get, {})
    with pytest.raises(PruneError, match="this host has 0.16.0"):
        prune_step(settings, PruneOptions(keep_storage_min=1), {"buildctl": "0.32.2", "buildkitd": "0.16.0"})


def fake_host(tmp_path: Path, service_active: bool, building: bool = False, prune_fails: bool = False) -> Path:
    """A buildctl that prunes two records and lists histories; a systemctl that knows which unit is active."""
    history = "STARTED\tb1\t2026-11-30T23:00:00Z\t\t0\t" if building else "COMPLETE\tb0\t2026-11-30T22:00:00Z\t\t0\t"
    prune = "echo 'error: failed to prune' >&2; exit 1" if prune_fails else "printf '3129478\\n4096\\n'"
    (tmp_path / "buildctl").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\ncase "$*" in\n'
        f'*" prune"*) {prune} ;;\n*"debug histories") printf "TYPE\\tREF\\n{history}\\n" ;;\nesac\n'
    )
    active = "buildkit.service buildkit.socket" if service_active else "buildkit.socket"
    (tmp_path / "systemctl").write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.calls\n'
        f'[ "$1" = is-active ] || exit 0\ncase " {active} " in *" $3 "*) exit 0 ;; esac\nexit 3\n'
    )
    for name in ("buildctl", "systemctl"):
        (tmp_path / name).chmod(0o755)
    return tmp_path


def prune(tmp_path: Path, arguments: list[str] | None = None) -> subprocess.CompletedProcess:
    settings = resolve_settings({}.get, {"bin_dir": str(tmp_path)})
    body = prune_body(settings, arguments or ["--all", "--format", "{{.Size}}"])
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", body], capture_output=True, text=True, env=env, timeout=60)


def test_a_daemon_started_to_prune_is_stopped_again_and_what_was_freed_is_said(tmp_path):
    host = fake_host(tmp_path, service_active=False)
    run = prune(host)
    assert run.returncode == 0, run.stderr
    assert run.stdout == (
        "freed 3133574 bytes (3.1 MB) in 2 cache records; buildkit.service stopped again, as it was found\n"
    )
    assert "--addr unix:///run/buildkit/buildkitd.sock prune --all --format {{.Size}}" in (host / "calls").read_text()
    assert "stop buildkit.service" in (host / "systemctl.calls").read_text()


def test_a_running_daemon_stays_running_and_one_that_got_a_build_meanwhile_too(tmp_path):
    (tmp_path / "running").mkdir()
    host = fake_host(tmp_path / "running", service_active=True)
    run = prune(host)
    assert run.returncode == 0 and run.stdout.endswith("buildkit.service was running and still is\n")
    assert "stop" not in (host / "systemctl.calls").read_text()
    assert "debug histories" not in (host / "calls").read_text()

    (tmp_path / "building").mkdir()
    host = fake_host(tmp_path / "building", service_active=False, building=True)
    run = prune(host)
    assert run.returncode == 0 and run.stdout.endswith("left running: a build started on it meanwhile\n")
    assert "stop" not in (host / "systemctl.calls").read_text()


def test_before_buildkit_0_11_buildctls_own_total_is_said(tmp_path):
    host = fake_host(tmp_path, service_active=True)
    (host / "buildctl").write_text(
        "#!/bin/sh\nprintf 'ID\\tRECLAIMABLE\\tSIZE\\nx\\ttrue\\t5.17MB\\nTotal:\\t\\t5.17MB\\n'\n"
    )
    run = prune(host, ["--all"])
    assert run.stdout == "freed 5.17MB; buildkit.service was running and still is\n", run.stderr


def test_a_failed_prune_fails_the_host_and_still_leaves_the_daemon_as_found(tmp_path):
    host = fake_host(tmp_path, service_active=False, prune_fails=True)
    run = prune(host)
    assert run.returncode == 1
    assert (
        run.stderr == "buildctl prune failed: error: failed to prune; buildkit.service stopped again, as it was found\n"
    )


def test_no_listening_socket_is_one_error_and_nothing_is_asked(tmp_path):
    host = fake_host(tmp_path, service_active=False)
    (host / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.calls\nexit 3\n')
    run = prune(host)
    assert run.returncode == 1 and "nothing was pruned" in run.stderr
    assert not (host / "calls").exists()


def warnings_for(buildkit_version: str | None = "0.32.2", **data: object) -> list[str]:
    return disk_warnings(resolve_settings({}.get, data), buildkit_version)


def gc(**worker: object) -> dict:
    return {"buildkitd_config": {"worker": {"containerd": worker}}}


def test_no_disk_warning_for_the_defaults_or_a_capped_gc():
    assert warnings_for() == []
    capped = gc(gc=True, reservedSpace="2GB", maxUsedSpace="20GB", gcpolicy=[{"all": True, "maxUsedSpace": "5GB"}])
    assert warnings_for(**capped) == []


def test_gc_turned_off_is_a_warning():
    (warning,) = warnings_for(**gc(gc=False))
    assert warning.startswith("buildkitd_config turns BuildKit's garbage collection off (worker.containerd.gc = false)")


def test_a_floor_without_a_cap_is_named_where_it_is_on_buildkit_0_17_and_newer():
    config = gc(gckeepstorage="10GB", gcpolicy=[{"keepBytes": "1GB"}, {"all": True, "reservedSpace": "2GB"}])
    found = warnings_for("0.17.0", **config)
    assert [warning.split(" without")[0] for warning in found] == [
        "buildkitd_config: worker.containerd sets gckeepstorage",
        "buildkitd_config: worker.containerd.gcpolicy[0] sets keepBytes",
        "buildkitd_config: worker.containerd.gcpolicy[1] sets reservedSpace",
    ]
    assert "never prunes below" in found[0] and "set maxUsedSpace" in found[0]
    assert warnings_for(None, **config) == found  # an unknown version is taken for a current one
    # Before 0.17, keepBytes is the cap it always was (and reservedSpace does not exist).
    (older,) = warnings_for("0.16.0", **config)
    assert "does not know worker.containerd.gcpolicy[1].reservedSpace" in older


def test_the_new_gc_keys_on_buildkit_before_0_17_are_ignored_there():
    (worker, policy) = warnings_for("0.16.0", **gc(maxUsedSpace="10GB", gcpolicy=[{"minFreeSpace": "20%"}]))
    assert worker == (
        "buildkitd_config: BuildKit 0.16.0 does not know worker.containerd.maxUsedSpace (it came in 0.17) "
        "and ignores it silently: use gckeepstorage"
    )
    assert policy.startswith(
        "buildkitd_config: BuildKit 0.16.0 does not know worker.containerd.gcpolicy[0].minFreeSpace"
    )
    assert policy.endswith("use keepBytes")


def test_the_kubelets_namespace_warns_how_to_keep_built_images():
    (warning,) = warnings_for(containerd_namespace="k8s.io")
    assert "the kubelet's image garbage collection deletes images no container uses" in warning
    assert "ctr -n k8s.io images label IMAGE io.cri-containerd.pinned=pinned" in warning


def test_the_version_judged_is_the_wanted_release_or_for_the_full_flavor_the_installed_one():
    assert version_after_run(resolve_settings({}.get, {"buildkit_version": "0.16.0"}), "0.32.2") == "0.16.0"
    assert version_after_run(resolve_settings({}.get, {"nerdctl_flavor": "full"}), "0.15.1") == "0.15.1"
