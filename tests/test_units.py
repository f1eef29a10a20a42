"""Unit tests for the parts that need no host: releases, settings, rendering, facts' parsing."""

from __future__ import annotations

import subprocess

import pytest
import tomllib
from pyinfra_nerdctl.deploys import rendering
from pyinfra_nerdctl.deploys.operations import install_script
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
    parse_buildkit_versions,
    parse_nerdctl_version,
    parse_socket_unit,
    parse_unit_freshness,
)

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


def test_buildkit_without_pin_or_table_is_refused():
    with pytest.raises(ReleaseError, match="publishes no checksums: pin it with buildkit_sha256"):
        resolve_download(BUILDKIT, "9.9.9", "amd64", "https://github.com", None, _no_fetch)


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
        ("containerd_address", "tcp://10.0.0.1:1234", "must be a socket path or unix:// URL"),
        ("containerd_address", "containerd.sock", "must be a socket path or unix:// URL"),
        ("buildkit_socket_group", "Bad Group", "is not a valid group name"),
        ("containerd_namespace", "k8s io", "is not a containerd namespace name"),
        ("github_url", "ftp://mirror", "is not an http\\(s\\) URL"),
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
        "ExecStart": ["/usr/local/bin/buildkitd --addr fd:// --config /etc/buildkit/buildkitd.toml"],
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
            "stat=socket|660|root|buildkit",
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
        if line.split() and line.split()[0] in ("fetch", "unpack", "place", "place_last", "record")
    ]
    assert steps == [
        "fetch",
        "fetch",
        "unpack",
        "unpack",
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


def test_unit_freshness_parsing():
    lines = [
        "socket.NeedDaemonReload=no",
        "socket.ActiveState=active",
        "socket.ActiveEnterTimestamp=Sun 2026-11-29 18:01:02.500000 UTC",
        "socket.inputs=2026-11-29 18:01:02.400000000 +0000",
        "service.NeedDaemonReload=yes",
        "service.ActiveState=active",
        "service.ActiveEnterTimestamp=Sun 2026-11-29 18:01:02.500000 UTC",
        "service.inputs=2026-11-29 18:01:02.600000123 +0000",
    ]
    assert parse_unit_freshness(lines) == {
        "socket": {"needs_daemon_reload": False, "stale": False},
        "service": {"needs_daemon_reload": True, "stale": True},
    }
    inactive = [line.replace("=active", "=inactive") for line in lines]
    assert parse_unit_freshness(inactive)["service"]["stale"] is False
    assert parse_unit_freshness(["service.ActiveEnterTimestamp=n/a", "service.inputs="]) == parse_unit_freshness([])
