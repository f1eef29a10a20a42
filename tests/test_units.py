"""Unit tests for the parts that need no host: releases, settings, rendering, facts' parsing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest
import tomllib
from pyinfra_nerdctl import layout
from pyinfra_nerdctl.deploys import commands, rendering
from pyinfra_nerdctl.deploys.changes import (
    Changes,
    Removal,
    dir_slots,
    file_slots,
    managed_dirs,
    managed_files,
    plan_changes,
    plan_removal,
)
from pyinfra_nerdctl.deploys.operations import ClaimedUploadCommand, install_script
from pyinfra_nerdctl.deploys.releases import (
    BUILDKIT,
    NERDCTL,
    NERDCTL_FULL,
    ReleaseError,
    checksum_table,
    default_version,
    normalise_sha256,
    normalise_version,
    parse_sha256sums,
    resolve_download,
    upstream_arch,
)
from pyinfra_nerdctl.deploys.settings import (
    DEFAULTS,
    SettingError,
    resolve_settings,
    unknown_key_warnings,
)
from pyinfra_nerdctl.facts import (
    BuildHostState,
    parse_buildkit_versions,
    parse_full_readme,
    parse_nerdctl_version,
    parse_socket_unit,
    parse_systemd_timestamp,
    parse_unit_freshness,
)
from pyinfra_nerdctl.facts.state import leftovers_command
from states import converged_state

SHA = "a" * 64


@pytest.mark.parametrize(
    ("release", "version", "arch", "url"),
    [
        (
            NERDCTL,
            "2.3.5",
            "amd64",
            "https://github.com/containerd/nerdctl/releases/download/v2.3.5/nerdctl-2.3.5-linux-amd64.tar.gz",
        ),
        (
            NERDCTL,
            "1.7.6",
            "arm-v7",
            "https://github.com/containerd/nerdctl/releases/download/v1.7.6/nerdctl-1.7.6-linux-arm-v7.tar.gz",
        ),
        (
            NERDCTL_FULL,
            "2.3.5",
            "arm64",
            "https://github.com/containerd/nerdctl/releases/download/v2.3.5/nerdctl-full-2.3.5-linux-arm64.tar.gz",
        ),
        (
            BUILDKIT,
            "0.12.5",
            "amd64",
            "https://github.com/moby/buildkit/releases/download/v0.12.5/buildkit-v0.12.5.linux-amd64.tar.gz",
        ),
        (
            BUILDKIT,
            "0.32.2",
            "s390x",
            "https://github.com/moby/buildkit/releases/download/v0.32.2/buildkit-v0.32.2.linux-s390x.tar.gz",
        ),
    ],
)
def test_asset_urls_follow_github_layout(release, version, arch, url):
    assert release.url("https://github.com/", version, release.asset(version, arch)) == url


@pytest.mark.parametrize(
    ("machine", "release", "version", "arch"),
    [
        ("x86_64", NERDCTL, "2.3.5", "amd64"),
        ("aarch64", BUILDKIT, "0.12.5", "arm64"),
        ("armv7l", NERDCTL, "2.3.5", "arm-v7"),
        ("loongarch64", NERDCTL, "2.1.0", "loong64"),
        ("riscv64", BUILDKIT, "0.32.2", "riscv64"),
    ],
)
def test_host_machine_maps_to_upstream_arch(machine, release, version, arch):
    assert upstream_arch(machine, release, version) == arch


@pytest.mark.parametrize(
    ("machine", "release", "version"),
    [
        ("i686", NERDCTL, "2.3.5"),
        ("loongarch64", NERDCTL, "2.0.0"),
        ("loongarch64", BUILDKIT, "0.32.2"),
        ("armv7l", NERDCTL_FULL, "2.3.5"),
    ],
)
def test_unshipped_arch_is_a_clear_error(machine, release, version):
    with pytest.raises(ReleaseError, match=f"'{machine}' is not shipped by {release.label} {version}"):
        upstream_arch(machine, release, version)


@pytest.mark.parametrize(
    ("given", "wanted"),
    [("0.12.5", "0.12.5"), ("v0.12.5", "0.12.5"), (" 2.3.5 ", "2.3.5"), ("2.0.0-rc.1", "2.0.0-rc.1")],
)
def test_versions_normalise(given, wanted):
    assert normalise_version(given) == wanted


@pytest.mark.parametrize("bad", ["latest!", "", "1.2.3.4.5", "1.2", "v", None, "2.3.5; rm -rf /"])
def test_bad_versions_are_refused(bad):
    with pytest.raises(ReleaseError, match="is not a release version"):
        normalise_version(bad, "nerdctl_version")


@pytest.mark.parametrize("number", [0.1, 1.7, 2, True])
def test_numbers_from_data_are_refused_with_a_hint(number):
    with pytest.raises(ReleaseError, match="arrived as a number"):
        normalise_version(number, "buildkit_version")


def test_sha256_pins_are_checked():
    assert normalise_sha256("SHA256:" + "AB" * 32, "k") == "ab" * 32
    assert normalise_sha256(None, "k") is None
    with pytest.raises(ReleaseError, match="nerdctl_sha256='abc' is not a SHA-256"):
        normalise_sha256("abc", "nerdctl_sha256")


def test_default_versions_are_newest_named_pins():
    assert default_version(NERDCTL) == "2.3.5"
    assert default_version(BUILDKIT) == "0.32.2"  # 0.33.x pins come only from unnamed index files


def test_checksum_table_holds_public_pins():
    table = checksum_table()
    assert table["nerdctl"]["2.3.5"]["nerdctl-2.3.5-linux-amd64.tar.gz"]
    assert "0.12.5" in table["buildkit"]


def test_parse_sha256sums():
    text = f"{SHA}  nerdctl-2.3.5-linux-amd64.tar.gz\n{'b' * 64} *nerdctl-full-2.3.5-linux-amd64.tar.gz\nnot a line\n"
    assert parse_sha256sums(text) == {
        "nerdctl-2.3.5-linux-amd64.tar.gz": SHA,
        "nerdctl-full-2.3.5-linux-amd64.tar.gz": "b" * 64,
    }


def _no_fetch(url):
    raise AssertionError(f"fetched {url}")


def test_checksum_order_pin_then_table_then_sums():
    pinned = resolve_download(NERDCTL, "2.3.5", "amd64", "https://github.com", SHA, _no_fetch)
    assert (pinned.sha256, pinned.checksum_source) == (SHA, "explicit pin")
    table = resolve_download(NERDCTL, "2.3.5", "amd64", "https://github.com", None, _no_fetch)
    assert table.sha256 == checksum_table()["nerdctl"]["2.3.5"]["nerdctl-2.3.5-linux-amd64.tar.gz"]
    fetched = []

    def fetch(url):
        fetched.append(url)
        return f"{'c' * 64}  nerdctl-9.0.0-linux-amd64.tar.gz\n"

    sums = resolve_download(NERDCTL, "9.0.0", "amd64", "http://127.0.0.1:1", None, fetch)
    assert sums.sha256 == "c" * 64
    assert fetched == ["http://127.0.0.1:1/containerd/nerdctl/releases/download/v9.0.0/SHA256SUMS"]


def test_buildkit_without_pin_table_or_provenance_is_refused():
    def no_provenance(url):
        raise ReleaseError(f"{url} answered HTTP 404")

    with pytest.raises(ReleaseError, match="its provenance cannot be read .*: pin it with buildkit_sha256"):
        resolve_download(BUILDKIT, "9.9.9", "amd64", "https://github.com", None, no_provenance)


def test_nerdctl_asset_missing_from_sums_is_refused():
    with pytest.raises(ReleaseError, match="not listed in the release's SHA256SUMS"):
        resolve_download(NERDCTL, "9.0.0", "amd64", "https://github.com", None, lambda url: "")


def test_settings_lookup_order():
    data = {"containerd_namespace": "k8s.io", "bin_dir": "/opt/bin"}
    settings = resolve_settings(data.get, {"bin_dir": "/usr/bin"})
    assert settings.bin_dir == "/usr/bin"  # keyword beats host data
    assert settings.containerd_namespace == "k8s.io"  # host data beats default
    assert settings.containerd_address == DEFAULTS["containerd_address"]
    assert settings.nerdctl_version == "2.3.5" and settings.buildkit_socket_group is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("bin_dir", "usr/local/bin", "bin_dir='usr/local/bin' must be an absolute path"),
        ("bin_dir", "/opt/my bin", "must be an absolute path of letters, digits and ._\\+-/ only"),
        ("bin_dir", "/opt/%n", "must be an absolute path of letters"),
        ("containerd_address", "tcp://10.0.0.1:1234", "must be a socket path or unix:// URL"),
        ("containerd_address", "containerd.sock", "must be a socket path or unix:// URL"),
        ("buildkit_socket_group", "Bad Group", "is not a valid group name"),
        ("containerd_namespace", "k8s io", "is not a containerd namespace name"),
        ("github_url", "ftp://mirror", "is neither an http\\(s\\) URL"),
        ("github_url", "/no/such/folder", "is not a folder on the controller"),
        ("nerdctl_docker_alias", "maybe", "is not a yes/no value"),
        ("buildkit_version", 0.1, "buildkit_version=0.1 arrived as a number"),
        ("nerdctl_verison", "2.3.5", "unknown setting 'nerdctl_verison' \\(did you mean nerdctl_version\\?\\)"),
    ],
)
def test_bad_settings_name_key_and_value(key, value, message):
    with pytest.raises(SettingError, match=message):
        resolve_settings({}.get, {key: value})


def test_settings_normalise_cli_values():
    settings = resolve_settings(
        {"nerdctl_docker_alias": "yes", "containerd_address": "unix:///run/k3s/containerd/containerd.sock"}.get, {}
    )
    assert settings.nerdctl_docker_alias is True
    assert settings.containerd_socket == "/run/k3s/containerd/containerd.sock"


def test_misspelt_data_keys_warn():
    assert unknown_key_warnings(["nerdctl_verison", "ssh_hostname", "bin_dir"]) == [
        "unknown setting 'nerdctl_verison' (did you mean nerdctl_version?)"
    ]


K3S = resolve_settings(
    {
        "containerd_address": "unix:///run/k3s/containerd/containerd.sock",
        "containerd_namespace": "k8s.io",
        "buildkit_socket_group": "buildkit",
    }.get,
    {},
)


def test_buildkitd_toml_uses_plain_worker_path_and_nerdctl_namespace():
    config = tomllib.loads(rendering.buildkitd_toml(K3S))
    assert config["worker"] == {
        "oci": {"enabled": False},
        "containerd": {"enabled": True, "address": "/run/k3s/containerd/containerd.sock", "namespace": "k8s.io"},
    }


def test_nerdctl_toml():
    assert tomllib.loads(rendering.nerdctl_toml(K3S)) == {
        "address": "unix:///run/k3s/containerd/containerd.sock",
        "namespace": "k8s.io",
    }


def _unit(text):
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            current.setdefault(key, []).append(value)
    return sections


def test_units_have_correct_keys():
    service = _unit(rendering.buildkit_service_unit(K3S))
    assert service["Unit"]["Requires"] == ["buildkit.socket"]
    assert service["Unit"]["After"][0].split() == [
        "buildkit.socket",
        "containerd.service",
        "k3s.service",
        "k3s-agent.service",
    ]
    assert service["Unit"]["Documentation"]
    assert service["Service"] == {
        "Type": ["notify"],
        "Environment": ["PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "ExecStart": ["/usr/local/bin/buildkitd --addr fd:// --config /etc/buildkit/buildkitd.toml"],
        # Neither cuts short what a deploy waits for: the builds it drained for, a daemon starting on a big cache.
        "TimeoutStopSec": ["600"],
        "TimeoutStartSec": ["300"],
    }
    assert "Install" not in service  # started by its socket only
    socket = _unit(rendering.buildkit_socket_unit(K3S))
    assert socket["Socket"]["SocketMode"] == ["0660"] and socket["Socket"]["SocketGroup"] == ["buildkit"]
    assert socket["Install"]["WantedBy"] == ["sockets.target"]
    root_only = _unit(rendering.buildkit_socket_unit(resolve_settings({}.get, {})))
    assert "SocketGroup" not in root_only["Socket"]


def test_docker_alias_never_shadows_docker(tmp_path):
    script = tmp_path / "alias.sh"
    script.write_text(rendering.docker_alias(K3S) + "alias docker 2>/dev/null || echo none\n")
    without_docker = subprocess.run(
        ["/bin/sh", str(script)], capture_output=True, text=True, env={"PATH": str(tmp_path)}
    )
    assert without_docker.stdout.strip() == "docker='/usr/local/bin/nerdctl'"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text("#!/bin/sh\n")
    (fake_bin / "docker").chmod(0o755)
    found = subprocess.run(
        ["sh", str(script)], capture_output=True, text=True, env={"PATH": f"{fake_bin}:/usr/bin:/bin"}
    )
    assert found.stdout.strip() == "none"


def test_nerdctl_version_parsing():
    assert parse_nerdctl_version(["nerdctl version 2.3.5"]) == "2.3.5"
    assert parse_nerdctl_version(["nerdctl version v1.7.6"]) == "1.7.6"
    assert parse_nerdctl_version([]) is None
    assert parse_nerdctl_version(["Client:", " Version: v2.3.5"]) is None  # `nerdctl version`, not --version


def test_buildkit_version_parsing():
    lines = [
        "buildkitd github.com/moby/buildkit v0.12.5 bac3f2b673f3f9d33e79046008e7a38e856b3dc6",
        "buildctl github.com/moby/buildkit v0.13.0 596ef8f8c3c0c2d0dfc5bfb1d0c0c0a0c0c0c0c0",
    ]
    assert parse_buildkit_versions(lines) == {"buildkitd": "0.12.5", "buildctl": "0.13.0"}
    assert parse_buildkit_versions([]) == {"buildkitd": None, "buildctl": None}


def test_socket_unit_parsing():
    state = parse_socket_unit(
        [
            "UnitFileState=enabled",
            "ActiveState=active",
            "Listen=/run/buildkit/buildkitd.sock (Stream)",
            "stat=c1b0|660|root|buildkit",
        ]
    )
    assert state == {
        "enabled": True,
        "active": True,
        "path": "/run/buildkit/buildkitd.sock",
        "exists": True,
        "is_socket": True,
        "mode": "660",
        "user": "root",
        "group": "buildkit",
    }
    absent = parse_socket_unit(["UnitFileState=", "ActiveState=inactive", "Listen="])
    assert absent["enabled"] is False and absent["path"] is None and absent["exists"] is False


def test_install_script_is_valid_shell_and_checks_hash_before_unpacking():
    download = resolve_download(BUILDKIT, "0.12.5", "amd64", "https://github.com", SHA, _no_fetch)
    nerdctl = resolve_download(NERDCTL, "2.3.5", "amd64", "https://github.com", SHA, _no_fetch)
    script = install_script([nerdctl, download], "/usr/local/bin")
    subprocess.run(["sh", "-n", "-c", script], check=True)
    steps = [
        line.split()[0]
        for line in script.splitlines()
        if line.split() and line.split()[0] in ("fetch", "unpack", "intend", "place", "place_last", "record")
    ]
    assert steps == [
        "fetch",
        "fetch",
        "unpack",
        "unpack",
        "intend",
        "intend",
        "place",
        "place",
        "place_last",
        "place_last",
        "record",
        "record",
    ]
    assert (
        "place_last 1 bin 'buildctl buildkitd'" in script
        and "unpack https://github.com/containerd/nerdctl/releases/download/v2.3.5/nerdctl-2.3.5-linux-amd64.tar.gz 0 . nerdctl"
        in script
    )


def _run_at(root, script: str) -> int:
    """``script`` run with root's folders and the host's lock moved under ``root``, and owned by whoever runs the
    tests (the README's fresh-clone block runs them as a user); its exit status."""
    moved = script.replace(layout.STATE_DIR, f"{root}/state").replace(layout.LOCK_FILE, f"{root}/lock")
    moved = moved.replace("-o root -g root", f"-o {os.getuid()} -g {os.getgid()}")
    return subprocess.run(["sh", "-c", moved], capture_output=True).returncode


def test_failing_runs_that_upload_take_root_folders_back_once_no_run_holds_a_claim(tmp_path):
    upload_a, upload_b = f"{layout.UPLOAD_DIR}/aa.1", f"{layout.UPLOAD_DIR}/bb.2"
    state = tmp_path / "state"

    assert _run_at(tmp_path, commands.claim_uploads([upload_a], 5)) == 0  # a fresh host: run A marks it
    assert _run_at(tmp_path, commands.claim_uploads([upload_b], 5)) == 0  # B, while A is in flight
    assert sorted(path.name for path in (state / "uploads").iterdir()) == [
        "aa.1",
        "aa.1.fresh-host",
        "bb.2",
        "bb.2.fresh-host",
    ]
    assert _run_at(tmp_path, commands.take_back_uploads([upload_a], 5)) == 1  # B's claim keeps the folders
    assert sorted(path.name for path in (state / "uploads").iterdir()) == ["bb.2", "bb.2.fresh-host"]
    assert _run_at(tmp_path, commands.take_back_uploads([upload_b], 5)) == 1
    assert not state.exists()

    # B fails after A installed: the folders stay, with A's file lists in them.
    assert _run_at(tmp_path, commands.claim_uploads([upload_a], 5)) == 0
    assert _run_at(tmp_path, commands.claim_uploads([upload_b], 5)) == 0
    (state / "uploads" / "aa.1").unlink()
    (state / "uploads" / "aa.1.fresh-host").unlink()
    (state / "nerdctl@_usr_local_bin.files").touch()
    assert _run_at(tmp_path, commands.take_back_uploads([upload_b], 5)) == 1
    assert sorted(path.name for path in state.iterdir()) == ["nerdctl@_usr_local_bin.files", "uploads", "work"]
    shutil.rmtree(state)

    # A host that had the folders keeps them, and a claim there leaves no mark.
    (state / "uploads").mkdir(parents=True)
    assert _run_at(tmp_path, commands.claim_uploads([upload_a], 5)) == 0
    assert [path.name for path in (state / "uploads").iterdir()] == ["aa.1"]
    assert _run_at(tmp_path, commands.take_back_uploads([upload_a], 5)) == 1
    assert sorted(path.name for path in state.iterdir()) == ["uploads", "work"]


class _UploadFailing:
    """A host whose uploads fail as ``failure`` says (False, or an exception), and that records its commands."""

    name = "build-1"

    def __init__(self, failure: bool | Exception) -> None:
        self.failure, self.commands = failure, []

    def put_file(self, *args, **arguments):
        if isinstance(self.failure, Exception):
            raise self.failure
        return self.failure

    def run_shell_command(self, command, **arguments):
        self.commands.append((str(command), arguments.get("_sudo")))
        return False, None


@pytest.mark.parametrize("failure", [False, OSError("Failure")], ids=["refused", "raised"])
def test_a_failed_upload_takes_its_claim_back_as_the_same_user(failure):
    host = _UploadFailing(failure)
    state = SimpleNamespace(print_output=False, print_input=False)
    upload = ClaimedUploadCommand("/cache/a.tar.gz", "/var/lib/pyinfra-nerdctl/uploads/a", "take it back")

    if isinstance(failure, Exception):
        with pytest.raises(OSError):
            upload.execute(state, host, {"_sudo": True})
    else:
        assert upload.execute(state, host, {"_sudo": True}) is False
    assert host.commands == [("take it back", True)]


def test_unit_freshness_parsing():
    lines = [
        "unit.UnitFileState=enabled",
        "unit.ActiveState=active",
        "unit.NeedDaemonReload=no",
        "unit.ActiveEnterTimestamp=Sun 2026-11-29 18:01:02.500000 UTC",
        "unit.",
        "unit.UnitFileState=static",
        "unit.ActiveState=active",
        "unit.NeedDaemonReload=yes",
        "unit.ActiveEnterTimestamp=Sun 2026-11-29 18:01:02.500000 UTC",
        "ctime.socket=2026-11-29 18:01:02.400000000 +0000",
        "ctime.service=2026-11-29 18:00:00.000000000 +0000",
        "ctime.service=2026-11-29 18:01:02.600000123 +0000",
    ]
    assert parse_unit_freshness(lines) == {
        "socket": {"enabled": True, "active": True, "needs_daemon_reload": False, "stale": False},
        "service": {"enabled": False, "active": True, "needs_daemon_reload": True, "stale": True},
        "containerd": {"enabled": False, "active": False, "needs_daemon_reload": False, "stale": False},
    }
    inactive = [line.replace("=active", "=inactive") for line in lines]
    assert parse_unit_freshness(inactive)["service"]["stale"] is False
    absent = ["unit.ActiveState=inactive", "unit.ActiveEnterTimestamp=", "unit.", "unit.ActiveState=inactive"]
    assert parse_unit_freshness(absent) == parse_unit_freshness([])


def test_converged_host_needs_nothing():
    assert plan_changes(K3S, converged_state(K3S), (NERDCTL, BUILDKIT)) == Changes()


def test_fresh_host_needs_everything_but_restarts():
    state = {
        "machine": "x86_64",
        "systemd": True,
        "nerdctl": None,
        "buildkit": {"buildkitd": None, "buildctl": None},
        "paths": {},
        "created_dirs": {},
        "group_exists": False,
        "units": parse_unit_freshness([]),
        "full": {"version": None, "components": {}, "managed": False},
    }
    changes = plan_changes(K3S, state, (NERDCTL, BUILDKIT))
    assert changes.outdated == (NERDCTL, BUILDKIT) and changes.create_group
    assert changes.enable_socket and not changes.daemon_reload  # `systemctl enable` reloads
    assert [file.path for file in changes.files] == [file.path for file in managed_files(K3S, (NERDCTL, BUILDKIT))]
    assert changes.start_socket and not changes.restart_socket and not changes.restart_service


def test_new_buildkit_restarts_only_a_running_service():
    state = converged_state(K3S)
    state["buildkit"] = {"buildkitd": "0.11.0", "buildctl": "0.11.0"}
    assert plan_changes(K3S, state, (NERDCTL, BUILDKIT)) == Changes(
        outdated=(BUILDKIT,), restart_service=True, wait_for_builds=True
    )
    state["units"]["service"]["active"] = False
    assert plan_changes(K3S, state, (NERDCTL, BUILDKIT)) == Changes(outdated=(BUILDKIT,))


def test_new_nerdctl_touches_no_unit():
    state = converged_state(K3S)
    state["nerdctl"] = "1.0.0"
    assert plan_changes(K3S, state, (NERDCTL, BUILDKIT)) == Changes(outdated=(NERDCTL,))


def test_changed_socket_unit_reloads_and_restarts_the_socket_not_the_service():
    state = converged_state(K3S)
    state["paths"][layout.SOCKET_PATH]["sha256"] = "0" * 64
    changes = plan_changes(K3S, state, (NERDCTL, BUILDKIT))
    assert changes.daemon_reload and changes.restart_socket and not changes.restart_service


def test_stale_units_from_an_interrupted_run_are_reloaded_and_restarted():
    state = converged_state(K3S)
    state["units"]["service"].update(needs_daemon_reload=True, stale=True)
    assert plan_changes(K3S, state, (NERDCTL, BUILDKIT)) == Changes(
        daemon_reload=True, restart_service=True, wait_for_builds=True
    )


def test_wrong_mode_or_owner_is_rewritten_and_alias_removed_when_off():
    settings = resolve_settings({}.get, {})
    state = converged_state(settings, (NERDCTL,))
    state["paths"][layout.NERDCTL_CONFIG]["mode"] = "666"
    state["paths"]["/etc/nerdctl"]["user"] = "nobody"
    alias = {"kind": "file", "mode": "644", "user": "root", "group": "root", "sha256": "x", "ours": False}
    state["paths"][layout.DOCKER_ALIAS] = alias
    changes = plan_changes(settings, state, (NERDCTL,))
    assert [file.path for file in changes.files] == [layout.NERDCTL_CONFIG]
    assert changes.dirs == ("/etc/nerdctl",) and not changes.remove_alias, "an alias file without our marker stays"
    alias["ours"] = True
    assert plan_changes(settings, state, (NERDCTL,)).remove_alias and not changes.daemon_reload


def test_build_host_state_parsing():
    lines = [
        "machine=aarch64",
        "systemd=yes",
        "nerdctl version 2.3.5",
        "buildkitd github.com/moby/buildkit v0.12.5 bac3f2b673f3f9d33e79046008e7a38e856b3dc6",
        "path=/etc/nerdctl/nerdctl.toml|81a4|644|root|root",
        "path=/etc/nerdctl|41ed|755|root|root",
        f"{SHA}  /etc/nerdctl/nerdctl.toml",
        f"/etc/nerdctl/nerdctl.toml:{layout.MARKER}",
        "group=yes",
        "unit.UnitFileState=enabled",
    ]
    state = BuildHostState().process(lines)
    assert state["machine"] == "aarch64" and state["systemd"] and state["nerdctl"] == "2.3.5"
    assert state["buildkit"] == {"buildkitd": "0.12.5", "buildctl": None}
    assert state["paths"] == {
        "/etc/nerdctl/nerdctl.toml": {
            "kind": "file",
            "mode": "644",
            "user": "root",
            "group": "root",
            "sha256": SHA,
            "ours": True,
        },
        "/etc/nerdctl": {"kind": "dir", "mode": "755", "user": "root", "group": "root", "sha256": None, "ours": False},
    }
    assert state["group_exists"] and state["units"]["socket"]["enabled"]


def test_build_host_state_command_is_valid_shell():
    command = BuildHostState().command("/usr/local/bin", ("/etc/nerdctl", "/etc/a b"), "builders")
    subprocess.run(["sh", "-n", "-c", command], check=True)


def test_systemd_timestamps_with_and_without_microseconds():
    assert parse_systemd_timestamp("Sun 2026-11-29 18:01:02.500000 UTC").microsecond == 500000
    assert parse_systemd_timestamp("Sun 2026-11-29 18:01:02 UTC").second == 2  # systemd before 247
    assert parse_systemd_timestamp("n/a") is None and parse_systemd_timestamp("") is None


def test_numbers_from_data_become_cache_paths_or_errors():
    with pytest.raises(SettingError, match="release_cache_dir=.* must be an absolute path"):
        resolve_settings({}.get, {"release_cache_dir": 5})


FULL = resolve_settings(
    {}.get, {"nerdctl_flavor": "full", "full_prefix": "/opt/nerdctl", "containerd_config": {"version": 2}}
)


def test_full_flavor_settings():
    assert FULL.full and FULL.bin_dir == "/opt/nerdctl/bin"
    with pytest.raises(SettingError, match="nerdctl_flavor='fat' is neither 'minimal' nor 'full'"):
        resolve_settings({}.get, {"nerdctl_flavor": "fat"})
    with pytest.raises(SettingError, match="cannot be set with nerdctl_flavor='full'"):
        resolve_settings({}.get, {"nerdctl_flavor": "full", "bin_dir": "/opt/bin"})
    assert resolve_settings({}.get, {"containerd_config": '{"version": 2}'}).containerd_config == {"version": 2}
    with pytest.raises(SettingError, match="containerd_config=.* is neither a dict nor JSON"):
        resolve_settings({}.get, {"containerd_config": "version=2"})


def test_full_flavor_rendering():
    assert tomllib.loads(rendering.nerdctl_toml(FULL))["cni_path"] == "/opt/nerdctl/libexec/cni"
    assert "cni_path" not in rendering.nerdctl_toml(K3S)
    unit = _unit(rendering.containerd_unit(FULL))
    assert unit["Service"]["ExecStart"] == ["/opt/nerdctl/bin/containerd"] and unit["Service"]["Type"] == ["notify"]
    assert "ExecStart=/opt/nerdctl/bin/buildkitd --addr fd://" in rendering.buildkit_service_unit(FULL)


def test_toml_document_round_trips():
    config = {
        "version": 2,
        "root": "/var/lib/containerd",
        "grpc": {"address": "/run/containerd/containerd.sock", "uid": 0},
        "plugins": {
            "io.containerd.grpc.v1.cri": {"enable_selinux": False, "sandbox_image": "pause:3.9", "sizes": [1, 2.5]}
        },
    }
    assert tomllib.loads(rendering.toml_document(config)) == config
    with pytest.raises(ValueError, match="cannot write"):
        rendering.toml_document({"bad": object()})


def test_full_flavor_plans():
    releases = (NERDCTL_FULL,)
    fresh = {
        "machine": "x86_64",
        "systemd": True,
        "nerdctl": None,
        "buildkit": {"buildkitd": None, "buildctl": None},
        "paths": {},
        "created_dirs": {},
        "group_exists": True,
        "units": parse_unit_freshness([]),
        "full": {"version": None, "components": {}, "managed": False},
    }
    changes = plan_changes(FULL, fresh, releases)
    assert changes.outdated == releases and changes.enable_containerd and changes.start_containerd
    assert {file.path for file in changes.files} >= {layout.CONTAINERD_UNIT_PATH, layout.CONTAINERD_CONFIG}
    converged = converged_state(FULL, releases)
    converged["full"] = {"version": FULL.nerdctl_version, "components": {}, "managed": True}
    converged["units"]["containerd"] = {"enabled": True, "active": True, "needs_daemon_reload": False, "stale": False}
    assert plan_changes(FULL, converged, releases) == Changes()
    converged["full"]["version"] = "1.0.0"
    assert plan_changes(FULL, converged, releases) == Changes(
        outdated=releases, restart_containerd=True, restart_service=True, wait_for_builds=True
    )
    # Back to minimal: the minimal releases count as absent, and the full containerd unit goes.
    minimal = resolve_settings({}.get, {})
    back = converged_state(minimal)
    back["full"] = {"version": "2.3.5", "components": {}, "managed": True}
    # Our unit is known by its marker, whatever full_prefix it was rendered from (its content differs).
    unit = {"kind": "file", "mode": "644", "user": "root", "group": "root", "sha256": "other prefix", "ours": True}
    back["paths"][layout.CONTAINERD_UNIT_PATH] = unit
    changes = plan_changes(minimal, back, (NERDCTL, BUILDKIT))
    assert changes.outdated == (NERDCTL, BUILDKIT) and changes.retire_containerd and changes.daemon_reload
    unit["ours"] = False  # an operator's own containerd.service stays
    assert not plan_changes(minimal, back, (NERDCTL, BUILDKIT)).retire_containerd


def test_every_deploy_has_one_fixed_sequence_of_slots():
    assert file_slots((NERDCTL,)) == (layout.NERDCTL_CONFIG, layout.DOCKER_ALIAS)
    assert dir_slots((BUILDKIT,)) == (layout.BUILDKIT_CONFIG_DIR, layout.BUILDKIT_TLS_DIR)
    everything = (NERDCTL, BUILDKIT, NERDCTL_FULL)
    assert file_slots(everything) == (
        layout.NERDCTL_CONFIG,
        layout.DOCKER_ALIAS,
        layout.CONTAINERD_UNIT_PATH,
        layout.CONTAINERD_CONFIG,
        layout.BUILDKIT_CONFIG,
        layout.SOCKET_PATH,
        layout.SERVICE_PATH,
        *layout.TLS_FILES,
    )
    # Every file a flavor writes has its slot, so no host ever runs an operation the others lack.
    for settings in (resolve_settings({}.get, {"nerdctl_docker_alias": True}), FULL):
        for releases in ((NERDCTL, BUILDKIT), (NERDCTL_FULL,)):
            assert {file.path for file in managed_files(settings, releases)} <= set(file_slots(everything))
            assert set(managed_dirs(settings, releases)) <= set(dir_slots(everything))


def test_removal_takes_only_what_carries_our_marker():
    everything = (NERDCTL, BUILDKIT, NERDCTL_FULL)
    state = converged_state(resolve_settings({}.get, {}))
    state["paths"][layout.SOCKET_PATH]["ours"] = False  # a hand-written unit at our path
    state["paths"][layout.CONTAINERD_UNIT_PATH] = {"kind": "file", "ours": False}
    state["units"]["containerd"].update(enabled=True, active=True)
    removal = plan_removal(state, everything)
    assert removal.files == (layout.NERDCTL_CONFIG, layout.BUILDKIT_CONFIG, layout.SERVICE_PATH)
    assert removal.stop_units == () and removal.stop_service and removal.daemon_reload
    assert removal.dirs == (layout.NERDCTL_CONFIG_DIR, layout.BUILDKIT_CONFIG_DIR)
    state["paths"][layout.CONTAINERD_UNIT_PATH]["ours"] = True
    assert plan_removal(state, everything).stop_units == (layout.CONTAINERD_UNIT,)
    nothing = converged_state(resolve_settings({}.get, {}))
    nothing["paths"] = {}
    assert plan_removal(nothing, everything) == Removal()


def test_release_cache_dir_is_the_controllers_business():
    spaced = resolve_settings({}.get, {"release_cache_dir": "/home/a user/cache"})
    assert spaced.release_cache_dir == "/home/a user/cache"
    assert resolve_settings({}.get, {"release_cache_dir": "~/c"}).release_cache_dir.endswith("/c")


def test_full_readme_parsing():
    lines = ["full.nerdctl=2.3.5", "full.containerd=2.1.4", "full.CNI plugins=1.7.1"]
    assert parse_full_readme(lines) == {
        "version": "2.3.5",
        "components": {"nerdctl": "2.3.5", "containerd": "2.1.4", "CNI plugins": "1.7.1"},
    }
    assert parse_full_readme([]) == {"version": None, "components": {}}


def test_full_archive_install_script_keeps_the_tree_and_retires_minimal_files():
    download = resolve_download(NERDCTL_FULL, "2.3.5", "amd64", "https://github.com", SHA, _no_fetch)
    script = install_script([download], "/usr/local", retired=[NERDCTL, BUILDKIT])
    subprocess.run(["sh", "-n", "-c", script], check=True)
    assert "place_last 0 . 'bin/nerdctl share/doc/nerdctl-full/README.md'" in script
    assert 'for manifest in /var/lib/pyinfra-nerdctl/buildkit@*.files; do retire "$manifest"; done' in script


def test_host_lock_wait_is_a_whole_number_of_seconds():
    assert resolve_settings({}.get, {}).host_lock_wait == 600
    assert resolve_settings({}.get, {"host_lock_wait": "30"}).host_lock_wait == 30
    assert resolve_settings({}.get, {"host_lock_wait": 30}).host_lock_wait == 30
    for bad in ("soon", "0", "-5", "1.5", True):
        with pytest.raises(SettingError, match="host_lock_wait=.* is not a whole number of seconds"):
            resolve_settings({}.get, {"host_lock_wait": bad})


def test_leftovers_are_what_killed_runs_left_untouched_for_an_hour(tmp_path):
    bin_dir = tmp_path / "b in"
    (bin_dir / ".pyinfra-nerdctl.Old123" / "bin").mkdir(parents=True)
    (bin_dir / ".pyinfra-nerdctl.New456").mkdir()  # another run's, unpacking now
    (bin_dir / "nerdctl").write_text("")  # an old file of ours is no leftover
    stale = time.time() - 2 * 3600
    for path in (bin_dir / ".pyinfra-nerdctl.Old123", bin_dir / "nerdctl"):
        os.utime(path, (stale, stale))

    output = subprocess.run(
        ["sh", "-c", leftovers_command((str(bin_dir), str(bin_dir)))], capture_output=True, text=True, check=True
    ).stdout.splitlines()

    assert output == [f"leftover={bin_dir}/.pyinfra-nerdctl.Old123"]
    assert BuildHostState().process(output)["leftovers"] == [f"{bin_dir}/.pyinfra-nerdctl.Old123"]
    assert BuildHostState().process([])["leftovers"] == []
