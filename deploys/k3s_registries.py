"""k3s's registry configuration as BuildKit's ``[registry]`` tables and nerdctl's ``hosts_dir`` (pure, unit-tested).

k3s reads ``/etc/rancher/k3s/registries.yaml`` (``mirrors``: endpoints and rewrites per
registry; ``configs``: TLS files and credentials per registry host) and, from 1.26.13,
writes it out as containerd ``hosts.toml`` files under its ``certs.d``. nerdctl reads those
files itself, once that folder is in its ``hosts_dir``. BuildKit reads no ``hosts.toml``, so
its tables are made from the YAML, following k3s's own reading of it
(``pkg/agent/containerd/config.go``): an endpoint without a scheme is ``http`` on a
loopback address with a port other than 443, else ``https``; an endpoint path other than
``/v2`` is the registry API's root (containerd's ``override_path``). What BuildKit cannot
say is left out with a warning naming the registry: the ``"*"`` wildcard, ``rewrite``,
``auth`` (BuildKit takes credentials from the client, never from its config), and
endpoint paths outside ``/v2``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..layout import K3S_CERTS_DIR, NERDCTL_HOSTS_DIRS
from .yaml_subset import FALSE_WORDS, NULL_WORDS, TRUE_WORDS, Plain, YamlError, read_yaml

FILE = "registries.yaml"
KNOWN_KEYS = {
    "": ("mirrors", "configs"),
    "mirror": ("endpoint", "rewrite"),
    "config": ("auth", "tls"),
    "tls": ("ca_file", "cert_file", "key_file", "insecure_skip_verify"),
}


class RegistriesError(ValueError):
    """A registries.yaml this package does not understand: the message names the line or the key."""


@dataclass(frozen=True)
class K3sRegistries:
    """What a host's k3s registry configuration gives BuildKit and nerdctl; empty where k3s configures none."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # buildkitd.toml's [registry."NAME"]
    hosts_dir: tuple[str, ...] = ()  # nerdctl's hosts_dir: k3s's certs.d first, then nerdctl's defaults
    warnings: tuple[str, ...] = ()


NO_K3S_REGISTRIES = K3sRegistries()


def k3s_registries(text: str | None, certs_dir: bool) -> K3sRegistries:
    """What the registries.yaml ``text`` (None: no such file) and k3s's certs.d (``certs_dir``: it exists) give.

    >>> k3s_registries('mirrors:\\n  docker.io:\\n    endpoint: ["http://127.0.0.1:5000"]\\n', True).tables
    {'127.0.0.1:5000': {'http': True}, 'docker.io': {'mirrors': ['127.0.0.1:5000']}}
    """
    try:
        document = read_yaml(text or "")
    except YamlError as error:
        raise RegistriesError(str(error)) from error
    warnings: list[str] = []
    top = _table(document, "", warnings, "")
    tables: dict[str, dict[str, Any]] = {}
    for name, config in _table(top.get("configs"), "configs", warnings).items():
        _config_table(name, _table(config, f"configs.{_quoted(name)}", warnings, "config"), tables, warnings)
    for name, mirror in _table(top.get("mirrors"), "mirrors", warnings).items():
        _mirror_tables(name, _table(mirror, f"mirrors.{_quoted(name)}", warnings, "mirror"), tables, warnings)
    hosts_dir = (K3S_CERTS_DIR, *NERDCTL_HOSTS_DIRS) if certs_dir else ()
    return K3sRegistries(tables, hosts_dir, tuple(warnings))


def _quoted(name: str) -> str:
    return f'"{name}"'


def _table(value: Any, where: str, warnings: list[str], known: str | None = None) -> dict[str, Any]:
    """``value`` as a mapping (empty when null); keys outside ``KNOWN_KEYS[known]`` are warned about."""
    if value is None or (isinstance(value, Plain) and value in NULL_WORDS):
        return {}
    if not isinstance(value, dict):
        raise RegistriesError(f"{where or 'the file'} must be a mapping, not {value!r}")
    if known is not None:
        for key in value:
            if key not in KNOWN_KEYS[known]:
                name = f"{where}.{key}" if where else key
                warnings.append(f"{FILE}: {name} is not a key k3s documents: ignored")
    return value


def _string(value: Any, where: str) -> str:
    """A string field ("" when null), as yaml.v2 fills a Go string: a plain ``true`` is the text ``true``."""
    if value is None or (isinstance(value, Plain) and value in NULL_WORDS):
        return ""
    if not isinstance(value, str):
        raise RegistriesError(f"{where} must be a string, not {value!r}")
    return str(value)


def _flag(value: Any, where: str) -> bool:
    if value is None or (isinstance(value, Plain) and value in NULL_WORDS | FALSE_WORDS):
        return False
    if isinstance(value, Plain) and value in TRUE_WORDS:
        return True
    raise RegistriesError(f"{where} must be true or false, not {value!r}")


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RegistriesError(f"{where} must be a list of strings, not {value!r}")
    return [_string(item, where) for item in value]


def _config_table(name: str, config: dict[str, Any], tables: dict[str, dict[str, Any]], warnings: list[str]) -> None:
    """BuildKit's TLS keys for the registry host ``name`` from its k3s ``config``: ``ca``, ``keypair``, ``insecure``."""
    where = f"configs.{_quoted(name)}"
    tls = _table(config.get("tls"), f"{where}.tls", warnings, "tls")
    files = {key: _string(tls.get(key), f"{where}.tls.{key}") for key in ("ca_file", "cert_file", "key_file")}
    insecure = _flag(tls.get("insecure_skip_verify"), f"{where}.tls.insecure_skip_verify")
    if config.get("auth") is not None:
        warnings.append(
            f"{FILE}: {where}.auth: BuildKit takes registry credentials from the client that builds "
            "(~/.docker/config.json, as `nerdctl login` writes it), never from its config: not carried over"
        )
    if name == "*" or "/" in name:
        if tls:
            warnings.append(f"{FILE}: {where}.tls: BuildKit has TLS settings per registry host only: not carried over")
        return
    table: dict[str, Any] = {}
    if files["ca_file"]:
        table["ca"] = [files["ca_file"]]
    if files["cert_file"] and files["key_file"]:
        table["keypair"] = [{"key": files["key_file"], "cert": files["cert_file"]}]
    elif files["cert_file"] or files["key_file"]:
        warnings.append(
            f"{FILE}: {where}.tls: a client certificate needs both cert_file and key_file: not carried over"
        )
    if insecure:
        table["insecure"] = True
    if table:
        tables.setdefault(name, {}).update(table)


def _mirror_tables(name: str, mirror: dict[str, Any], tables: dict[str, dict[str, Any]], warnings: list[str]) -> None:
    """``mirrors`` for the registry ``name``, and each mirror host's ``http`` flag."""
    where = f"mirrors.{_quoted(name)}"
    endpoints = _strings(mirror.get("endpoint"), f"{where}.endpoint")
    rewrites = _table(mirror.get("rewrite"), f"{where}.rewrite", warnings)
    if name == "*":
        warnings.append(f"{FILE}: {where}: BuildKit has no mirror for every registry at once: not carried over")
        return
    if rewrites:
        warnings.append(
            f"{FILE}: {where}.rewrite: BuildKit cannot rewrite repository names, so the mirrors of {name} "
            "would be asked for names they may not hold: not carried over"
        )
        return
    mirrors = []
    for endpoint in endpoints:
        found = _endpoint(name, endpoint, warnings)
        if found is None:
            continue
        host, path, http = found
        # https is BuildKit's default but on loopback addresses, where plain HTTP is.
        written = http or _loopback(urlsplit(f"//{host}").hostname or "")
        kept = tables.setdefault(host, {}).setdefault("http", http) if written else http
        if kept != http:
            first = "http" if kept else "https"
            warnings.append(
                f"{FILE}: {where}: {host} is named with both http and https, and BuildKit has one: {first} kept"
            )
        # The registry itself (k3s's way to say it is plain HTTP) is no mirror: BuildKit tries it after them anyway.
        if (host, path) != (_default_host(name), ""):
            mirrors.append(host + path)
    if mirrors:
        tables.setdefault(name, {})["mirrors"] = list(dict.fromkeys(mirrors))


def _default_host(name: str) -> str:
    """The host a registry name is pulled from without mirrors (containerd's ``docker.DefaultHost``)."""
    return "registry-1.docker.io" if name == "docker.io" else name


def _endpoint(name: str, endpoint: str, warnings: list[str]) -> tuple[str, str, bool] | None:
    """``(host[:port], path after /v2, plain HTTP)`` of a k3s endpoint, as BuildKit names a mirror."""
    try:
        url = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        port = url.port
    except ValueError:
        url = None
    where = f"{FILE}: mirrors.{_quoted(name)} endpoint {endpoint!r}"
    if url is None or not url.hostname or url.scheme not in ("", "http", "https") or url.username or url.query:
        warnings.append(f"{where} is not a registry URL k3s takes: not carried over")
        return None
    scheme = url.scheme or ("http" if _loopback(url.hostname) and port not in (None, 443) else "https")
    path = url.path.rstrip("/")
    if path not in ("", "/v2") and not path.startswith("/v2/"):
        warnings.append(
            f"{where}: BuildKit puts /v2 before a mirror's path, containerd uses {path} as it is: not carried over"
        )
        return None
    return _default_host(url.netloc), path.removeprefix("/v2"), scheme == "http"


def _loopback(hostname: str) -> bool:
    """containerd's ``docker.IsLocalhost``."""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
