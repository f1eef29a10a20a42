"""What ``buildkitd_config`` and ``nerdctl_config`` may hold, checked before any host is touched (pure).

The schemas follow upstream: moby/buildkit's ``cmd/buildkitd/config`` (``Config`` and
``resolverconfig.RegistryConfig``) and nerdctl's ``docs/config.md`` / ``pkg/config``.
A real buildkitd exits on a value of the wrong type, and then its socket dies with
``start-limit-hit``; it silently ignores a key it does not know. So a wrong type is an
error here, and an unknown key a warning that names the key most likely meant.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union


class ConfigError(ValueError):
    """A config value that cannot work; the message names the setting, the key, the value and what it must be."""


@dataclass(frozen=True)
class Kind:
    """A leaf value's type: what it must be (for the message), and the check."""

    expected: str
    accepts: Callable[[Any], bool]


@dataclass(frozen=True)
class TableOf:
    """A table whose keys are free (registry names), each value following ``schema``."""

    schema: Schema


@dataclass(frozen=True)
class ArrayOf:
    """An array of tables (``[[worker.containerd.gcpolicy]]``), each following ``schema``."""

    schema: Schema


Schema = dict[str, Union[Kind, TableOf, ArrayOf, "Schema"]]

# go-units RAMInBytes (the unit letter is case-insensitive; an "i" and "b" may follow), or a percentage.
DISK_SPACE_TEXT = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$|^\d+%$")
# Go's time.ParseDuration, or whole seconds.
DURATION_TEXT = re.compile(r"^(\d+|([0-9]*(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+)$")
ENTITLEMENTS = ("network.host", "security.insecure", "device")
LOG_LEVELS = ("panic", "fatal", "error", "warn", "warning", "info", "debug", "trace")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


def _entitlement(value: str) -> bool:
    return value in ENTITLEMENTS or value.startswith("device=")


STRING = Kind("a string", lambda value: isinstance(value, str))
BOOL = Kind("true or false", lambda value: isinstance(value, bool))
INTEGER = Kind("an integer", _integer)
STRINGS = Kind("a list of strings", _strings)
STRING_TABLE = Kind(
    "a table of strings",
    lambda value: isinstance(value, dict) and all(isinstance(item, str) for item in value.values()),
)
ANY_TABLE = Kind("a table", lambda value: isinstance(value, dict))
DISK_SPACE = Kind(
    'a size: bytes as an integer, or a string such as "20GB" or "10%"',
    lambda value: _integer(value) or (isinstance(value, str) and bool(DISK_SPACE_TEXT.match(value))),
)
DURATION = Kind(
    'a duration: seconds as an integer, or a string such as "48h"',
    lambda value: _integer(value) or (isinstance(value, str) and bool(DURATION_TEXT.match(value))),
)
ENTITLEMENT_LIST = Kind(
    f"a list of entitlements ({', '.join(ENTITLEMENTS)})",
    lambda value: _strings(value) and all(_entitlement(item) for item in value),
)
LOG_FORMAT = Kind('"text" or "json"', lambda value: value in ("text", "json"))
LOG_LEVEL = Kind(f"one of {', '.join(LOG_LEVELS)}", lambda value: value in LOG_LEVELS)

GC_POLICY: Schema = {
    "all": BOOL,
    "filters": STRINGS,
    "keepDuration": DURATION,
    "keepBytes": DISK_SPACE,
    "reservedSpace": DISK_SPACE,
    "maxUsedSpace": DISK_SPACE,
    "minFreeSpace": DISK_SPACE,
}
WORKER_COMMON: Schema = {
    "enabled": BOOL,
    "labels": STRING_TABLE,
    "platforms": STRINGS,
    "snapshotter": STRING,
    "rootless": BOOL,
    "gc": BOOL,
    "gckeepstorage": DISK_SPACE,
    "reservedSpace": DISK_SPACE,
    "maxUsedSpace": DISK_SPACE,
    "minFreeSpace": DISK_SPACE,
    "gcpolicy": ArrayOf(GC_POLICY),
    "networkMode": STRING,
    "cniConfigPath": STRING,
    "cniBinaryPath": STRING,
    "cniPoolSize": INTEGER,
    "bridgeName": STRING,
    "bridgeSubnet": STRING,
    "apparmor-profile": STRING,
    "selinux": BOOL,
    "max-parallelism": INTEGER,
    "defaultCgroupParent": STRING,
}
BUILDKITD: Schema = {
    "debug": BOOL,
    "trace": BOOL,
    "root": STRING,
    "insecure-entitlements": ENTITLEMENT_LIST,
    "proxyNetwork": BOOL,
    "provenanceEnvDir": STRING,
    "log": {"format": LOG_FORMAT, "level": LOG_LEVEL},
    "grpc": {
        "address": STRINGS,
        "debugAddress": STRING,
        "uid": INTEGER,
        "gid": INTEGER,
        "securityDescriptor": STRING,
        "tls": {"cert": STRING, "key": STRING, "ca": STRING},
    },
    "otel": {"socketPath": STRING},
    "cdi": {"disabled": BOOL, "specDirs": STRINGS, "autoAllowed": STRINGS},
    "worker": {
        "oci": {
            **WORKER_COMMON,
            "noProcessSandbox": BOOL,
            "binary": STRING,
            "proxySnapshotterPath": STRING,
            "userRemapUnsupported": STRING,
            "stargzSnapshotter": ANY_TABLE,
        },
        "containerd": {
            **WORKER_COMMON,
            "address": STRING,
            "namespace": STRING,
            "runtime": {"name": STRING, "path": STRING, "options": ANY_TABLE},
        },
    },
    "registry": TableOf(
        {
            "mirrors": STRINGS,
            "http": BOOL,
            "insecure": BOOL,
            "ca": STRINGS,
            "keypair": ArrayOf({"key": STRING, "cert": STRING}),
            "tlsconfigdir": STRINGS,
        }
    ),
    "dns": {"nameservers": STRINGS, "options": STRINGS, "searchDomains": STRINGS},
    "history": {"maxAge": DURATION, "maxEntries": INTEGER},
    "frontend": {
        "dockerfile.v0": {"enabled": BOOL},
        "gateway.v0": {"enabled": BOOL, "allowedRepositories": STRINGS},
    },
    "system": {"platformsCacheMaxAge": DURATION, "maxRegistryConcurrency": INTEGER},
    "cache": {"gha": ANY_TABLE},
}
NERDCTL: Schema = {
    "debug": BOOL,
    "debug_full": BOOL,
    "address": STRING,
    "namespace": STRING,
    "snapshotter": STRING,
    "cni_path": STRING,
    "cni_netconfpath": STRING,
    "data_root": STRING,
    "cgroup_manager": STRING,
    "insecure_registry": BOOL,
    "hosts_dir": STRINGS,
    "experimental": BOOL,
    "host_gateway_ip": STRING,
    "bridge_ip": STRING,
    "kube_hide_dupe": BOOL,
    "cdi_spec_dirs": STRINGS,
    "userns_remap": STRING,
    "dns": STRINGS,
    "dns_opts": STRINGS,
    "dns_search": STRINGS,
    "disable_hc_systemd": BOOL,
    "selinux_enabled": BOOL,
}

SOCKET_IS_SYSTEMDS = "the socket is systemd's buildkit.socket: use buildkit_socket_group for access"
# Keys these deploys write themselves, and the setting that sets each.
BUILDKITD_OWNED = {
    ("worker", "containerd", "address"): "use containerd_address",
    ("worker", "containerd", "namespace"): "use containerd_namespace",
    ("worker", "containerd", "enabled"): "the containerd worker is always on",
    ("worker", "oci", "enabled"): "the OCI worker is always off (builds go to containerd)",
    ("grpc", "address"): SOCKET_IS_SYSTEMDS,
    ("grpc", "uid"): SOCKET_IS_SYSTEMDS,
    ("grpc", "gid"): SOCKET_IS_SYSTEMDS,
    # Without a TCP address of its own (grpc.address is ours) TLS would guard nothing.
    ("grpc", "tls"): "use buildkit_remote_address: the deploy issues the certificates",
}
NERDCTL_OWNED: dict[tuple[str, ...], str] = {
    ("address",): "use containerd_address",
    ("namespace",): "use containerd_namespace",
}
NERDCTL_FULL_OWNED = {**NERDCTL_OWNED, ("cni_path",): "the full flavor sets it from full_prefix"}


def check_buildkitd_config(config: Mapping[str, Any]) -> list[str]:
    """Warnings for ``buildkitd_config`` (unknown keys); a ``ConfigError`` for an owned key or a wrong type.

    >>> check_buildkitd_config({"worker": {"containerd": {"gc": True, "gckeepstorge": "1GB"}}})[0][:62]
    'buildkitd_config: unknown key worker.containerd.gckeepstorge ('
    """
    return _check("buildkitd_config", config, BUILDKITD, BUILDKITD_OWNED, "buildkitd ignores it")


def check_nerdctl_config(config: Mapping[str, Any], full: bool = False) -> list[str]:
    """Warnings for ``nerdctl_config`` (unknown keys); a ``ConfigError`` for an owned key or a wrong type."""
    owned = NERDCTL_FULL_OWNED if full else NERDCTL_OWNED
    return _check("nerdctl_config", config, NERDCTL, owned, "nerdctl refuses keys it does not know")


def _check(
    setting: str, config: Mapping[str, Any], schema: Schema, owned: Mapping[tuple[str, ...], str], unknown_effect: str
) -> list[str]:
    warnings: list[str] = []

    def walk(table: Mapping[str, Any], schema: Schema | None, path: tuple[str, ...]) -> None:
        for key, value in table.items():
            key = str(key)
            where = (*path, key)
            name = dotted(where)
            if where in owned:
                raise ConfigError(f"{setting}: {name} is set by this package: {owned[where]}")
            if value is None:
                raise ConfigError(f"{setting}: {name} has no value (TOML has no null)")
            rule = schema.get(key) if schema is not None else None
            if schema is not None and rule is None:
                warnings.append(f"{setting}: unknown key {name}{_did_you_mean(key, schema)}: {unknown_effect}")
            if isinstance(rule, Kind):
                if not rule.accepts(value):
                    raise ConfigError(f"{setting}: {name}={value!r} must be {rule.expected}")
                _check_plain(setting, name, value)
            elif isinstance(rule, ArrayOf):
                if not (isinstance(value, (list, tuple)) and all(isinstance(item, dict) for item in value)):
                    raise ConfigError(f"{setting}: {name}={value!r} must be a list of tables ([[{name}]])")
                for index, item in enumerate(value):
                    walk(item, rule.schema, (*path, f"{key}[{index}]"))
            elif isinstance(rule, (dict, TableOf)) or (rule is None and isinstance(value, dict)):
                if not isinstance(value, dict):
                    raise ConfigError(f"{setting}: {name}={value!r} must be a table")
                if isinstance(rule, TableOf):
                    for entry, entry_value in value.items():
                        entry_name = dotted((*where, str(entry)))
                        if not isinstance(entry_value, dict):
                            raise ConfigError(f"{setting}: {entry_name}={entry_value!r} must be a table")
                        walk(entry_value, rule.schema, (*where, str(entry)))
                else:
                    walk(value, rule, where)
            else:
                _check_plain(setting, name, value)

    walk(config, schema, ())
    return warnings


def _did_you_mean(key: str, schema: Schema) -> str:
    close = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def dotted(parts: tuple[str, ...]) -> str:
    """A key path as TOML writes it: ``registry."docker.io".mirrors`` (``gcpolicy[0]`` marks an array entry)."""
    return ".".join(part if re.fullmatch(r"[A-Za-z0-9_-]+(\[\d+\])?", part) else f'"{part}"' for part in parts)


def _check_plain(setting: str, name: str, value: Any) -> None:
    """Any value under an unknown key or a free table must still have a TOML form."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(setting, f"{name}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(setting, name, item)
    elif value is None or not isinstance(value, (str, int, float, bool)):
        raise ConfigError(f"{setting}: {name} holds {value!r}, which has no TOML form")
