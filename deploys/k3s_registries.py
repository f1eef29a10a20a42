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

k3s removes only the folders whose ``hosts.toml`` begins with its header: a file written by hand in
its ``certs.d`` stays, and k3s's containerd uses it. Those files (``BuildHostState`` sends only
them) are read as containerd reads them (``remotes/docker/config/hosts.go``) into the same
tables, for the registries the YAML does not name; what BuildKit cannot say is warned about,
naming the file and the registry, and a file containerd cannot read leaves its registry alone.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..layout import K3S_CERTS_DIR, NERDCTL_HOSTS_DIRS
from .yaml_subset import FALSE_WORDS, NULL_WORDS, TRUE_WORDS, Plain, YamlError, read_yaml

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

FILE = "registries.yaml"
KNOWN_KEYS = {
    "": ("mirrors", "configs"),
    "mirror": ("endpoint", "rewrite"),
    "config": ("auth", "tls"),
    "tls": ("ca_file", "cert_file", "key_file", "insecure_skip_verify"),
}
# containerd's hosts.toml (docs/hosts.md): the keys of a [host."URL"] table, also at the top level for the server.
HOST_KEYS = ("capabilities", "ca", "client", "skip_verify", "override_path", "header", "dial_timeout")
UNSAID = {
    "header": "BuildKit sends no headers of its own to a registry",
    "dial_timeout": "BuildKit has no connection timeout per registry",
}
CAPABILITIES = {"pull", "resolve", "push"}
PORT_FOLDER = re.compile(r"(.+)_([0-9]+)_")  # containerd's other folder name for host:port


class RegistriesError(ValueError):
    """A registries.yaml this package does not understand: the message names the line or the key."""


class HostsTomlError(ValueError):
    """A hosts.toml that containerd cannot read either: that registry is left to BuildKit's defaults."""


@dataclass(frozen=True)
class K3sRegistries:
    """What a host's k3s registry configuration gives BuildKit and nerdctl; empty where k3s configures none."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # buildkitd.toml's [registry."NAME"]
    hosts_dir: tuple[str, ...] = ()  # nerdctl's hosts_dir: k3s's certs.d first, then nerdctl's defaults
    warnings: tuple[str, ...] = ()


NO_K3S_REGISTRIES = K3sRegistries()


def k3s_registries(text: str | None, certs_dir: bool, hand_written: Mapping[str, str] | None = None) -> K3sRegistries:
    """What the registries.yaml ``text`` (None: no such file), k3s's certs.d (``certs_dir``: it exists) and the
    hosts.toml files written by hand in it (``hand_written``: folder → text) give.

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
    configs = _table(top.get("configs"), "configs", warnings)
    for name, config in configs.items():
        _config_table(name, _table(config, f"configs.{_quoted(name)}", warnings, "config"), tables, warnings)
    mirrors = _table(top.get("mirrors"), "mirrors", warnings)
    for name, mirror in mirrors.items():
        _mirror_tables(name, _table(mirror, f"mirrors.{_quoted(name)}", warnings, "mirror"), tables, warnings)
    # k3s writes a folder for each registry its file names, over one written by hand.
    _hand_written_tables(hand_written or {}, {*configs, *mirrors}, tables, warnings)
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
    pairs = [(files["cert_file"], files["key_file"])] if files["cert_file"] and files["key_file"] else []
    if not pairs and (files["cert_file"] or files["key_file"]):
        warnings.append(
            f"{FILE}: {where}.tls: a client certificate needs both cert_file and key_file: not carried over"
        )
    _put(tables, name, _tls_table([files["ca_file"]] if files["ca_file"] else [], pairs, insecure))


def _tls_table(cas: list[str], pairs: list[tuple[str, str]], insecure: bool) -> dict[str, Any]:
    """BuildKit's TLS keys for one host: CA files, client ``(cert, key)`` files, skipping verification."""
    table: dict[str, Any] = {}
    if cas:
        table["ca"] = cas
    if pairs:
        table["keypair"] = [{"key": key, "cert": cert} for cert, key in pairs]
    if insecure:
        table["insecure"] = True
    return table


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
        found = _endpoint(endpoint, f"{FILE}: {where} endpoint {endpoint!r}", warnings)
        mirror_host = found and _mirror(name, found, f"{FILE}: {where}", tables, warnings)
        if mirror_host:
            mirrors.append(mirror_host)
    _put(tables, name, {"mirrors": list(dict.fromkeys(mirrors))} if mirrors else {})


def _mirror(
    name: str, found: tuple[str, str, bool], where: str, tables: dict[str, dict[str, Any]], warnings: list[str]
) -> str | None:
    """The mirror of ``name`` that an endpoint (``_endpoint``'s ``found``) is, with its host's ``http`` flag in
    ``tables``; None when it is the registry itself (k3s's way to say that it is plain HTTP): BuildKit tries the
    registry after its mirrors anyway."""
    host, path, http = found
    # https is BuildKit's default but on loopback addresses, where plain HTTP is.
    written = http or _loopback(urlsplit(f"//{host}").hostname or "")
    kept = tables.setdefault(host, {}).setdefault("http", http) if written else http
    if kept != http:
        first = "http" if kept else "https"
        warnings.append(f"{where}: {host} is named with both http and https, and BuildKit has one: {first} kept")
    return None if (host, path) == (_default_host(name), "") else host + path


def _put(tables: dict[str, dict[str, Any]], name: str, table: dict[str, Any]) -> None:
    if table:
        tables.setdefault(name, {}).update(table)


def _default_host(name: str) -> str:
    """The host a registry name is pulled from without mirrors (containerd's ``docker.DefaultHost``)."""
    return "registry-1.docker.io" if name == "docker.io" else name


def _endpoint(endpoint: str, where: str, warnings: list[str]) -> tuple[str, str, bool] | None:
    """``(host[:port], path after /v2, plain HTTP)`` of a k3s endpoint, as BuildKit names a mirror; None, warned
    about as ``where``, when BuildKit cannot name it."""
    try:
        url = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        port = url.port
    except ValueError:
        url = None
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


def _hand_written_tables(
    files: Mapping[str, str], named: set[str], tables: dict[str, dict[str, Any]], warnings: list[str]
) -> None:
    """BuildKit's tables from the hosts.toml files written by hand in k3s's certs.d (``files``: folder → text),
    for the registries that registries.yaml (``named``) does not configure; merged into ``tables`` after the YAML's.
    """
    read: dict[str, str] = {}
    # containerd looks for host:port in host_port_/ before host:port/.
    for folder in sorted(files, key=lambda folder: PORT_FOLDER.fullmatch(folder) is None):
        port_folder = PORT_FOLDER.fullmatch(folder)
        name = f"{port_folder[1]}:{port_folder[2]}" if port_folder else folder
        where = f"{K3S_CERTS_DIR}/{folder}/hosts.toml"
        if name == "_default":
            warnings.append(
                f"{where}: containerd's settings for every registry without a folder of its own; "
                "BuildKit has no such wildcard: not carried over"
            )
        elif name in named:
            warnings.append(
                f"{where}: {FILE} configures {name} too and wins (k3s writes this folder from it when it starts): "
                "not carried over"
            )
        elif name in read:
            warnings.append(f"{where}: containerd reads {read[name]}/hosts.toml for {name}, not this file: ignored")
        else:
            read[name] = folder
            try:
                found = _hosts_toml_tables(name, folder, files[folder], f"{where} ({name})", warnings)
            except HostsTomlError as error:
                warnings.append(f"{error}: containerd cannot read it either: {name} keeps BuildKit's defaults")
                continue
            _merge(found, tables, f"{where} ({name})", warnings)


def _merge(
    found: dict[str, dict[str, Any]], tables: dict[str, dict[str, Any]], where: str, warnings: list[str]
) -> None:
    """``found``'s keys into ``tables`` where they are not set yet: BuildKit has one table per host, and
    containerd, one file per registry: an earlier file's setting for a shared mirror host wins."""
    for host, table in found.items():
        kept = tables.setdefault(host, {})
        for key, value in table.items():
            if kept.setdefault(key, value) != value:
                warnings.append(
                    f"{where}: {host}'s {key} differs from what {FILE} or an earlier hosts.toml gives it, "
                    "and BuildKit has one: the first kept"
                )


def _hosts_toml_tables(name: str, folder: str, text: str, where: str, warnings: list[str]) -> dict[str, dict[str, Any]]:
    """The tables one hosts.toml gives the registry ``name``: its hosts, in the file's order, as mirrors, each
    with its TLS settings; the ``server`` last (when it is the registry itself, its settings only)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise HostsTomlError(f"{where}: not valid TOML ({error})") from error
    hosts = document.get("host", {})
    if not isinstance(hosts, dict) or not all(isinstance(entry, dict) for entry in hosts.values()):
        raise HostsTomlError(f'{where}: host must hold [host."URL"] tables')
    server = document.get("server", "")
    if not isinstance(server, str):
        raise HostsTomlError(f"{where}: server must be a string")
    tables: dict[str, dict[str, Any]] = {}
    mirrors = []
    for url, entry in [*hosts.items(), (server, document)]:
        label, known = (
            (f' [host."{url}"]', HOST_KEYS) if entry is not document else ("", ("server", "host", *HOST_KEYS))
        )
        for key in entry.keys() - set(known):
            warnings.append(f"{where}{label}: {key} is not a key containerd documents: ignored")
        mirror = _host_tables(name, url, entry, folder, f"{where}{label}", tables, warnings)
        if mirror:
            mirrors.append(mirror)
    _put(tables, name, {"mirrors": list(dict.fromkeys(mirrors))} if mirrors else {})
    return tables


def _host_tables(
    name: str,
    url: str,
    entry: dict[str, Any],
    folder: str,
    where: str,
    tables: dict[str, dict[str, Any]],
    warnings: list[str],
) -> str | None:
    """One host of a hosts.toml (``url`` "": the registry itself), its TLS settings put in ``tables``; the mirror
    of ``name`` it is, None when it is none."""
    capabilities = _capabilities(entry.get("capabilities", []), where)
    override_path = _flag_of(entry, "override_path", where)
    base = f"{K3S_CERTS_DIR}/{folder}"  # containerd reads relative paths from the file's folder
    tls = _tls_table(
        _ca_files(entry.get("ca", []), base, where),
        _client_pairs(entry.get("client", []), base, where),
        _flag_of(entry, "skip_verify", where),
    )
    for key in UNSAID.keys() & entry.keys():
        warnings.append(f"{where}: {key}: {UNSAID[key]}: not carried over")
    if not url:
        _put(tables, name, tls)
        return None
    if "pull" not in capabilities:
        warnings.append(f"{where}: a host without the pull capability has no BuildKit counterpart: not carried over")
        return None
    found = _endpoint(_containerd_url(url, override_path), where, warnings)
    if found is None:
        return None
    mirror = _mirror(name, found, where, tables, warnings)
    # BuildKit's table for a registry holds the TLS settings of the registry itself.
    _put(tables, found[0] if mirror else name, tls)
    return mirror


def _capabilities(value: Any, where: str) -> set[str]:
    """containerd's capabilities of a host: all three when none are named."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise HostsTomlError(f"{where}: capabilities must be a list of strings")
    named = {item.lower() for item in value}
    if named - CAPABILITIES:
        raise HostsTomlError(f"{where}: unknown capability {sorted(named - CAPABILITIES)[0]!r}")
    return named or set(CAPABILITIES)


def _flag_of(entry: dict[str, Any], key: str, where: str) -> bool:
    value = entry.get(key, False)
    if not isinstance(value, bool):
        raise HostsTomlError(f"{where}: {key} must be true or false")
    return value


def _ca_files(value: Any, base: str, where: str) -> list[str]:
    """``ca``: one file or a list of files."""
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not all(isinstance(file, str) for file in files):
        raise HostsTomlError(f"{where}: ca must be a file or a list of files")
    return [posixpath.join(base, file) for file in files]


def _client_pairs(value: Any, base: str, where: str) -> list[tuple[str, str]]:
    """``client``: ``(cert, key)`` files of one file (holding both, which Go's TLS reads as both), a list of
    such files, or a list of ``[cert, key]`` pairs."""
    pairs = []
    for item in [value] if isinstance(value, str) else value if isinstance(value, list) else [None]:
        pair = [item, item] if isinstance(item, str) else item
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(file, str) for file in pair):
            raise HostsTomlError(f"{where}: client must be a file, a list of files, or a list of [cert, key] pairs")
        cert, key = (posixpath.join(base, file) for file in pair)
        pairs.append((cert, key))
    return pairs


def _containerd_url(url: str, override_path: bool) -> str:
    """A hosts.toml host as an endpoint whose path is the registry API's root, as containerd reads it: https
    without a scheme, and /v2 after a path that does not end with it unless ``override_path``."""
    absolute = url if "://" in url else f"https://{url}"
    try:
        parts = urlsplit(absolute)
    except ValueError:
        return absolute  # _endpoint says that it is no registry URL
    path = posixpath.normpath(parts.path).rstrip("/") if parts.path else ""
    if not override_path and not path.endswith("/v2"):
        path += "/v2"
    return urlunsplit(parts._replace(path=path))
