"""Unit tests for buildkitd_config / nerdctl_config, the TOML they become, and the check after a change."""

from __future__ import annotations

import json

import pytest
import tomllib
from pyinfra_nerdctl import layout
from pyinfra_nerdctl.deploys import rendering
from pyinfra_nerdctl.deploys.changes import Changes, ManagedFile
from pyinfra_nerdctl.deploys.config_schema import check_buildkitd_config, check_nerdctl_config
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL
from pyinfra_nerdctl.deploys.settings import SettingError, resolve_settings, settings_warnings
from pyinfra_nerdctl.deploys.verify import (
    buildkit_inputs_changed,
    check_paths,
    containerd_missing_warning,
    verify_script,
)
from pyinfra_nerdctl.facts import parse_buildkit_workers

EVERY_SHAPE = {
    "insecure-entitlements": ["network.host", "security.insecure", "device=nvidia.com/gpu"],
    "log": {"level": "debug", "format": "json"},
    "history": {"maxAge": 172800, "maxEntries": 50},
    "dns": {"nameservers": ["10.0.0.2"], "options": ["edns0"], "searchDomains": []},
    "registry": {
        "docker.io": {"mirrors": ["mirror.internal", "mirror2.internal:5000"]},
        "plain.internal:5000": {"http": True},
        "self-signed.internal": {"insecure": True, "ca": ["/etc/ca.pem"]},
        "mtls.internal": {"keypair": [{"key": "/k1", "cert": "/c1"}, {"key": "/k2", "cert": "/c2"}]},
    },
    "worker": {
        "oci": {"platforms": ["linux/arm64"]},
        "containerd": {
            "platforms": ["linux/amd64", "linux/arm64"],
            "max-parallelism": 4,
            "gc": True,
            "gckeepstorage": 10_000_000_000,
            "reservedSpace": "10%",
            "maxUsedSpace": "20GB",
            "minFreeSpace": "5GiB",
            "labels": {"team": "builds"},
            "runtime": {"name": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}},
            "gcpolicy": [
                {"filters": ["type==source.local"], "keepDuration": "48h", "maxUsedSpace": "512MB"},
                {"all": True, "keepBytes": 1024000000},
            ],
        },
    },
}
OWNED_WORKER = {"enabled": True, "address": "/run/containerd/containerd.sock", "namespace": "default"}


def settings(**overrides):
    return resolve_settings({}.get, overrides)


def test_every_supported_shape_is_valid_toml_with_our_worker_kept():
    written = rendering.buildkitd_toml(settings(buildkitd_config=json.dumps(EVERY_SHAPE)))

    parsed = tomllib.loads(written)

    expected = json.loads(json.dumps(EVERY_SHAPE))
    expected["worker"]["oci"]["enabled"] = False
    expected["worker"]["containerd"].update(OWNED_WORKER)
    assert parsed == expected
    assert "[[worker.containerd.gcpolicy]]" in written and '[registry."docker.io"]' in written
    assert check_buildkitd_config(EVERY_SHAPE) == []


def test_toml_writer_shapes_round_trip():
    shapes = [
        {"a": {"b": {"c": 1}}},
        {"only": {"tables": [{"x": 1}, {"x": 2, "nested": {"y": "z"}}]}},
        {"mixed": [1, "two", {"three": 3}], "empty": [], "t": {}},
        {"quoted key": {"dotted.name": "v", "ünïcode": "välue\n\"q\""}},
        {"float": 1.5, "neg": -3, "big": 10**15},
    ]
    for shape in shapes:
        assert tomllib.loads(rendering.toml_document(shape)) == shape, shape


def test_nerdctl_config_merged_and_owned_keys_refused():
    written = rendering.nerdctl_toml(settings(nerdctl_config={"experimental": True, "hosts_dir": ["/etc/certs.d"]}))
    assert tomllib.loads(written) == {
        "address": "/run/containerd/containerd.sock",
        "namespace": "default",
        "experimental": True,
        "hosts_dir": ["/etc/certs.d"],
    }
    with pytest.raises(SettingError, match="nerdctl_config: address is set by this package: use containerd_address"):
        settings(nerdctl_config={"address": "/x.sock"})
    check_nerdctl_config({"cni_path": "/opt/cni"})  # the minimal flavor leaves it to the operator
    with pytest.raises(SettingError, match="cni_path is set by this package: the full flavor sets it from full_prefix"):
        settings(nerdctl_flavor="full", nerdctl_config={"cni_path": "/opt/cni"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"worker": {"containerd": {"gc": "true"}}}, "worker.containerd.gc='true' must be true or false"),
        ({"worker": {"containerd": {"max-parallelism": "4"}}}, "max-parallelism='4' must be an integer"),
        ({"worker": {"containerd": {"maxUsedSpace": "lots"}}}, "maxUsedSpace='lots' must be a size"),
        ({"history": {"maxAge": "two days"}}, "history.maxAge='two days' must be a duration"),
        ({"log": {"level": "verbose"}}, "log.level='verbose' must be one of"),
        ({"worker": {"containerd": {"gcpolicy": [{"all": 1}]}}}, r"gcpolicy\[0\].all=1 must be true or false"),
        ({"worker": {"containerd": {"gcpolicy": [1]}}}, "must be a list of tables"),
        ({"registry": {"docker.io": ["m"]}}, "registry.\"docker.io\"=\\['m'\\] must be a table"),
        ({"registry": {"r": {"keypair": {"key": "k"}}}}, "keypair=.* must be a list of tables"),
        ({"worker": "containerd"}, "worker='containerd' must be a table"),
        ({"worker": {"containerd": {"enabled": False}}}, "enabled is set by this package"),
        ({"worker": {"oci": {"enabled": True}}}, "the OCI worker is always off"),
        ({"grpc": {"address": ["tcp://0.0.0.0:1234"]}}, "use buildkit_socket_group"),
        ({"unknown": {"x": None}}, "has no TOML form|has no value"),
    ],
)
def test_wrong_values_name_key_value_and_type(config, message):
    with pytest.raises(SettingError, match=message):
        settings(buildkitd_config=config)


def test_unknown_keys_warn_with_the_likely_key():
    resolved = settings(
        buildkitd_config={"worker": {"containerd": {"zzz_unrelated": 1, "maxUsedSpce": "1GB"}}, "histroy": {"a": 1}},
        nerdctl_config={"experimetal": True},
    )
    assert settings_warnings(resolved) == [
        "buildkitd_config: unknown key worker.containerd.zzz_unrelated: buildkitd ignores it",
        "buildkitd_config: unknown key worker.containerd.maxUsedSpce (did you mean maxUsedSpace?): buildkitd ignores it",
        "buildkitd_config: unknown key histroy (did you mean history?): buildkitd ignores it",
        "nerdctl_config: unknown key experimetal (did you mean experimental?): nerdctl refuses keys it does not know",
    ]


def test_buildkit_verify_flag():
    assert settings().buildkit_verify is True
    assert settings(buildkit_verify="false").buildkit_verify is False
    with pytest.raises(SettingError, match="buildkit_verify='maybe' is not a yes/no value"):
        settings(buildkit_verify="maybe")


def test_service_unit_puts_bin_dir_first_on_path():
    unit = rendering.buildkit_service_unit(settings(bin_dir="/opt/bk/bin"))
    assert "Environment=PATH=/opt/bk/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" in unit
    full = rendering.buildkit_service_unit(settings(nerdctl_flavor="full", full_prefix="/opt/nerdctl"))
    assert "Environment=PATH=/opt/nerdctl/bin:" in full


def test_check_runs_only_after_a_change_buildkit_depends_on():
    assert not buildkit_inputs_changed(Changes())
    assert not buildkit_inputs_changed(Changes(outdated=(NERDCTL,), files=(ManagedFile(layout.NERDCTL_CONFIG, ""),)))
    assert buildkit_inputs_changed(Changes(outdated=(BUILDKIT,)))
    assert buildkit_inputs_changed(Changes(files=(ManagedFile(layout.BUILDKIT_CONFIG, ""),)))
    assert buildkit_inputs_changed(Changes(restart_service=True))


def test_preflight_reads_the_containerd_socket_from_the_state_fact():
    k3s = settings(containerd_address="unix:///run/k3s/containerd/containerd.sock")
    assert "/run/k3s/containerd/containerd.sock" in check_paths(k3s, (NERDCTL, BUILDKIT))
    warning = containerd_missing_warning(k3s, {"paths": {}})
    assert warning.startswith("containerd socket /run/k3s/containerd/containerd.sock does not exist")
    assert "containerd or k3s is not installed or not running" in warning
    socket = {"kind": "socket", "mode": "660", "user": "root", "group": "root", "sha256": None}
    assert containerd_missing_warning(k3s, {"paths": {"/run/k3s/containerd/containerd.sock": socket}}) is None
    assert containerd_missing_warning(settings(nerdctl_flavor="full"), {"paths": {}}) is None


def test_verify_script_values():
    script = verify_script(settings(bin_dir="/opt/bk/bin", containerd_namespace="k8s.io"), service_was_running=False)
    assert "bin_dir=/opt/bk/bin\n" in script and "namespace=k8s.io\n" in script and "stop_after=yes\n" in script
    assert "watched='/etc/buildkit/buildkitd.toml /etc/systemd/system/buildkit.service" in script
    assert "/opt/bk/bin/buildkitd'" in script


def test_parse_buildkit_workers():
    lines = [
        "ID:\t\tq1",
        "Platforms:\tlinux/amd64,linux/amd64/v2",
        "BuildKit:\tgithub.com/moby/buildkit v0.32.90 bxreal",
        "Labels:",
        "\torg.mobyproject.buildkit.worker.containerd.namespace:\tk8s.io",
        "\torg.mobyproject.buildkit.worker.executor:\t\tcontainerd",
        "GC Policy rule#0:",
        "\tAll:\t\tfalse",
        "",
    ]
    assert parse_buildkit_workers(lines) == [
        {"id": "q1", "executor": "containerd", "namespace": "k8s.io", "platforms": ["linux/amd64", "linux/amd64/v2"]}
    ]
    assert parse_buildkit_workers([]) is None
