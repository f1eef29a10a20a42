"""The files the deploys write, rendered from settings (pure, unit-tested).

The units differ from the widely copied naive recipe on purpose: correct keys
(``Documentation=``, ``Requires=``), ``Type=notify`` (buildkitd sends READY),
``--addr fd://`` (without it buildkitd unlinks systemd's socket and binds its
own, losing ``SocketMode``/``SocketGroup``), and the socket is what gets enabled.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..layout import BUILDKIT_CONFIG, CONTAINERD_UNIT, MARKER, SOCKET_UNIT, SYSTEM_PATH, TLS_CA, TLS_SERVER
from .k3s_registries import NO_K3S_REGISTRIES, K3sRegistries
from .settings import Settings

HEADER = f"{MARKER}\n"
# After= on a unit that is not installed is a no-op, so both containerd flavours can be named.
CONTAINERD_UNITS = (CONTAINERD_UNIT, "k3s.service", "k3s-agent.service")


def toml_string(value: str) -> str:
    """A TOML basic string (JSON string escaping is valid TOML)."""
    return json.dumps(value)


def nerdctl_toml(settings: Settings, k3s: K3sRegistries = NO_K3S_REGISTRIES) -> str:
    """``/etc/nerdctl/nerdctl.toml``: the containerd nerdctl talks to, its namespace, and the full archive's CNI plugins."""
    owned: dict[str, Any] = {"address": settings.containerd_address, "namespace": settings.containerd_namespace}
    if settings.full:
        owned["cni_path"] = full_path(settings, "libexec/cni")
    return HEADER + toml_document({**owned, **with_k3s_hosts_dir(settings.nerdctl_config, k3s)})


def with_k3s_hosts_dir(config: dict[str, Any], k3s: K3sRegistries) -> dict[str, Any]:
    """``nerdctl_config`` with k3s's certs.d before nerdctl's own folders, unless it sets ``hosts_dir`` itself."""
    if not k3s.hosts_dir or "hosts_dir" in config:
        return config
    return {**config, "hosts_dir": list(k3s.hosts_dir)}


def with_k3s_registries(config: dict[str, Any], k3s: K3sRegistries) -> dict[str, Any]:
    """``buildkitd_config`` with k3s's ``[registry]`` tables; its own table for a registry wins whole over k3s's.

    Whole, not key by key: a table written for a registry says all of how to reach it.
    """
    if not k3s.tables:
        return config
    return {**config, "registry": {**k3s.tables, **config.get("registry", {})}}


def full_path(settings: Settings, relative: str) -> str:
    """A path inside the full archive's tree under ``full_prefix``."""
    return f"{settings.full_prefix.rstrip('/')}/{relative}"


def containerd_unit(settings: Settings) -> str:
    """``containerd.service`` for the full archive's containerd, as upstream's unit but from ``full_prefix``.

    Written to /etc/systemd/system so it wins over any packaged containerd unit.
    """
    return (
        HEADER
        + "[Unit]\nDescription=containerd container runtime (nerdctl-full)\nDocumentation=https://containerd.io\n"
        + "After=network.target local-fs.target dbus.service\n\n"
        + "[Service]\nExecStartPre=-/sbin/modprobe overlay\n"
        # The shim finds runc through PATH: the archive's bin/ first, wherever full_prefix is.
        + f"Environment=PATH={full_path(settings, 'bin')}:{SYSTEM_PATH}\n"
        + f"ExecStart={full_path(settings, 'bin/containerd')}\n"
        + "Type=notify\nDelegate=yes\nKillMode=process\nRestart=always\nRestartSec=5\n"
        + "LimitNPROC=infinity\nLimitCORE=infinity\nTasksMax=infinity\nOOMScoreAdjust=-999\n\n"
        + "[Install]\nWantedBy=multi-user.target\n"
    )


def containerd_toml(settings: Settings) -> str:
    """``/etc/containerd/config.toml`` from the ``containerd_config`` dict."""
    return HEADER + toml_document(settings.containerd_config or {})


def toml_document(data: dict[str, Any], table: tuple[str, ...] = ()) -> str:
    """A dict of scalars, lists, nested dicts and lists of dicts as TOML.

    The plain values first, then one ``[table]`` per dict and one ``[[table]]`` per
    entry of a list of dicts (an array of tables, as ``[[worker.containerd.gcpolicy]]``).

    >>> toml_document({"version": 2, "grpc": {"address": "/run/c.sock"}})
    'version = 2\\n\\n[grpc]\\naddress = "/run/c.sock"\\n'
    """
    lines = [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in data.items() if not _is_table(value)]
    text = "".join(line + "\n" for line in lines)
    for key, value in data.items():
        name = (*table, str(key))
        header = ".".join(_toml_key(part) for part in name)
        if isinstance(value, dict):
            body = toml_document(value, name)
            # A table holding only tables needs no header of its own.
            if body.startswith("\n[") and all(_is_table(item) for item in value.values()):
                text += body
            else:
                text += f"\n[{header}]\n" + body
        elif _is_table(value):
            for entry in value:
                text += f"\n[[{header}]]\n" + toml_document(entry, name)
    return text


def _is_table(value: object) -> bool:
    """A dict, or a non-empty list of dicts only (an array of tables)."""
    if isinstance(value, dict):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(item, dict) for item in value)


def _toml_key(key: object) -> str:
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else toml_string(text)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_inline_value(item) for item in value) + "]"
    raise ValueError(f"cannot write {value!r} to TOML")


def _inline_value(value: object) -> str:
    """A value inside an array; a dict there (in a mixed list) becomes an inline table."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(key)} = {_inline_value(item)}" for key, item in value.items()) + "}"
    return _toml_value(value)


def buildkitd_toml(settings: Settings, k3s: K3sRegistries = NO_K3S_REGISTRIES) -> str:
    """``/etc/buildkit/buildkitd.toml``: ``buildkitd_config`` with the containerd worker only, on nerdctl's
    containerd and namespace.

    The worker address must be a plain path (``unix://`` makes buildkitd exit), and
    the namespace must be nerdctl's so that built images show up in ``nerdctl images``.
    The settings checks refuse these keys in ``buildkitd_config``, so nothing here is overridden.
    """
    owned_worker = {
        "enabled": True,
        "address": settings.containerd_socket,
        "namespace": settings.containerd_namespace,
    }
    config = with_k3s_registries(settings.buildkitd_config, k3s)
    workers = dict(config.pop("worker", {}))
    workers["oci"] = {"enabled": False, **workers.get("oci", {})}
    workers["containerd"] = {**owned_worker, **workers.get("containerd", {})}
    return HEADER + toml_document({**config, "worker": workers})


def buildkit_socket_unit(settings: Settings) -> str:
    """``buildkit.socket``: root-only (0660) unless a group is configured."""
    group = f"SocketGroup={settings.buildkit_socket_group}\n" if settings.buildkit_socket_group else ""
    return (
        HEADER
        + "[Unit]\nDescription=BuildKit socket\nDocumentation=https://github.com/moby/buildkit\n\n"
        + "[Socket]\nListenStream=%t/buildkit/buildkitd.sock\nSocketMode=0660\nSocketUser=root\n"
        + group
        + "\n[Install]\nWantedBy=sockets.target\n"
    )


def stop_and_start_timeouts(settings: Settings) -> str:
    """systemd's limits for a BuildKit unit: neither cuts short what a deploy waits for.

    A stop after the drain is quick, but a build that began in between still gets the
    drain's patience (``buildkit_drain_timeout``, never below systemd's 90 s) before the
    SIGKILL; a start may take as long as the check waits for it (``buildkit_verify_timeout``):
    a big cache makes it slow, and systemd must not kill it for that.
    """
    stop = max(settings.buildkit_drain_timeout, 90)
    return f"TimeoutStopSec={stop}\nTimeoutStartSec={settings.buildkit_verify_timeout}\n"


def remote_listener(settings: Settings) -> str:
    """buildkitd's flags for its TCP listener with mutual TLS (``buildkit_remote_address``); none when it is off.

    buildkitd wraps only TCP listeners in TLS (``getListener``, and go-systemd's ``TLSListeners`` for
    ``fd://``), so the unix socket systemd passes stays as it is. Flags, not ``[grpc]`` in
    buildkitd.toml: ``--addr`` on the command line replaces the config's whole address list.
    """
    if settings.buildkit_remote_address is None:
        return ""
    return (
        f" --addr tcp://{settings.buildkit_remote_address}"
        f" --tlscacert {TLS_CA} --tlscert {TLS_SERVER} --tlskey {TLS_SERVER}"
    )


def buildkit_service_unit(settings: Settings) -> str:
    """``buildkit.service``: started by its socket, never enabled on its own, unless it serves remote clients.

    A TCP client cannot start it through the socket (systemd's socket passes buildkitd one
    listener), so a remote builder's service is enabled at boot and runs all the time.
    """
    remote = settings.buildkit_remote_address is not None
    return (
        HEADER
        + "[Unit]\nDescription=BuildKit\nDocumentation=https://github.com/moby/buildkit\n"
        + f"Requires={SOCKET_UNIT}\n"
        + f"After={SOCKET_UNIT} {' '.join(CONTAINERD_UNITS)}{' network-online.target' if remote else ''}\n"
        + ("Wants=network-online.target\n" if remote else "")
        + "\n[Service]\nType=notify\n"
        # buildkitd finds buildkit-qemu-* and buildkit-cni-* through PATH: bin_dir first, wherever it is.
        + f"Environment=PATH={settings.bin_dir}:{SYSTEM_PATH}\n"
        + f"ExecStart={settings.bin_dir}/buildkitd --addr fd://{remote_listener(settings)} --config {BUILDKIT_CONFIG}\n"
        + stop_and_start_timeouts(settings)
        + ("\n[Install]\nWantedBy=multi-user.target\n" if remote else "")
    )


def docker_alias(settings: Settings) -> str:
    """A login-shell alias ``docker`` to nerdctl that never shadows a real docker."""
    return (
        HEADER
        + "if ! command -v docker >/dev/null 2>&1; then\n"
        + f"  alias docker={settings.bin_dir}/nerdctl\n"
        + "fi\n"
    )
