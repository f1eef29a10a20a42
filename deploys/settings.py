"""Every setting of the build-host deploys: defaults, lookup order and checks.

A setting comes from a keyword argument, else host data (inventory, group data,
``--data``), else the default below. All of it is checked here, before anything
touches a host; nothing in this module needs a host.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from .config_schema import ConfigError, check_buildkitd_config, check_nerdctl_config
from .controller import default_cache_dir
from .releases import (
    BUILDKIT,
    NERDCTL,
    ReleaseError,
    default_version,
    normalise_sha256,
    normalise_version,
)

DEFAULTS: dict[str, Any] = {
    "nerdctl_version": None,  # newest pinned release, see releases.default_version
    "buildkit_version": None,
    "github_url": "https://github.com",
    "nerdctl_sha256": None,
    "buildkit_sha256": None,
    "bin_dir": "/usr/local/bin",
    "containerd_address": "/run/containerd/containerd.sock",
    "containerd_namespace": "default",
    "buildkit_socket_group": None,
    "nerdctl_docker_alias": False,
    "download_on_controller": False,
    "nerdctl_flavor": "minimal",
    "full_prefix": "/usr/local",
    "containerd_config": None,
    "release_cache_dir": None,  # controller.default_cache_dir()
    "host_lock_wait": 600,
    "buildkitd_config": None,  # merged into /etc/buildkit/buildkitd.toml
    "nerdctl_config": None,  # merged into /etc/nerdctl/nerdctl.toml
    "buildkit_verify": True,  # after a change BuildKit depends on, check that it answers
    "buildkit_takeover": False,  # stop and disable another BuildKit setup (the usual recipe) instead of refusing
    "buildkit_drain_timeout": 600,  # before a restart or stop, wait this long for builds in flight (0: do not wait)
    "buildkit_verify_timeout": 300,  # how long a stopping or starting daemon is waited for (and TimeoutStartSec)
}
FLAVORS = ("minimal", "full")
PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._+/-]*$")
GROUP_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}\$?$")
NAMESPACE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,74}[A-Za-z0-9])?$")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class SettingError(ValueError):
    """A setting whose value cannot work; the message names the key and the value."""


@dataclass(frozen=True)
class Settings:
    nerdctl_version: str
    buildkit_version: str
    github_url: str
    nerdctl_sha256: str | None
    buildkit_sha256: str | None
    bin_dir: str
    containerd_address: str
    containerd_namespace: str
    buildkit_socket_group: str | None
    nerdctl_docker_alias: bool
    download_on_controller: bool
    release_cache_dir: str
    nerdctl_flavor: str
    full_prefix: str
    containerd_config: dict[str, Any] | None
    host_lock_wait: int
    buildkitd_config: dict[str, Any]
    nerdctl_config: dict[str, Any]
    buildkit_verify: bool
    buildkit_takeover: bool
    buildkit_drain_timeout: int
    buildkit_verify_timeout: int

    @property
    def full(self) -> bool:
        return self.nerdctl_flavor == "full"

    @property
    def fetch_on_controller(self) -> bool:
        """Whether the controller fetches archives and uploads them (always for a local ``github_url``)."""
        return self.download_on_controller or self.github_url.startswith("file://")

    @property
    def containerd_socket(self) -> str:
        """The containerd socket as a plain path (BuildKit's worker refuses ``unix://``)."""
        return self.containerd_address.removeprefix("unix://")


def resolve_settings(lookup: Callable[[str], Any], overrides: Mapping[str, Any]) -> Settings:
    """Settings from ``overrides`` (keyword arguments), else ``lookup`` (host data), else defaults.

    >>> resolve_settings({}.get, {"buildkit_version": "v0.12.5"}).buildkit_version
    '0.12.5'
    """
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise SettingError("; ".join(_unknown_key_message(key) for key in sorted(unknown)))

    def value(key: str) -> Any:
        if overrides.get(key) is not None:
            return overrides[key]
        found = lookup(key)
        return DEFAULTS[key] if found is None else found

    flavor = str(value("nerdctl_flavor")).strip()
    if flavor not in FLAVORS:
        raise SettingError(f"nerdctl_flavor={value('nerdctl_flavor')!r} is neither 'minimal' nor 'full'")
    full_prefix = _absolute_path(value("full_prefix"), "full_prefix")
    bin_dir = _absolute_path(value("bin_dir"), "bin_dir")
    if flavor == "full":
        # The full archive's binaries live in its bin/; bin_dir follows full_prefix.
        if bin_dir != DEFAULTS["bin_dir"] and bin_dir != f"{full_prefix}/bin":
            raise SettingError(f"bin_dir={bin_dir!r} cannot be set with nerdctl_flavor='full': set full_prefix")
        bin_dir = f"{full_prefix.rstrip('/')}/bin"
    try:
        return Settings(
            nerdctl_version=_version(value("nerdctl_version"), "nerdctl_version", default_version(NERDCTL)),
            buildkit_version=_version(value("buildkit_version"), "buildkit_version", default_version(BUILDKIT)),
            github_url=_github_url(value("github_url")),
            nerdctl_sha256=normalise_sha256(value("nerdctl_sha256"), "nerdctl_sha256"),
            buildkit_sha256=normalise_sha256(value("buildkit_sha256"), "buildkit_sha256"),
            bin_dir=bin_dir,
            containerd_address=_containerd_address(value("containerd_address")),
            containerd_namespace=_namespace(value("containerd_namespace")),
            buildkit_socket_group=_group(value("buildkit_socket_group")),
            nerdctl_docker_alias=parse_flag(value("nerdctl_docker_alias"), "nerdctl_docker_alias"),
            download_on_controller=parse_flag(value("download_on_controller"), "download_on_controller"),
            release_cache_dir=_controller_path(value("release_cache_dir") or default_cache_dir(), "release_cache_dir"),
            nerdctl_flavor=flavor,
            full_prefix=full_prefix,
            containerd_config=_containerd_config(value("containerd_config")),
            host_lock_wait=_seconds(value("host_lock_wait"), "host_lock_wait"),
            buildkitd_config=_checked_config(value("buildkitd_config"), "buildkitd_config", flavor == "full"),
            nerdctl_config=_checked_config(value("nerdctl_config"), "nerdctl_config", flavor == "full"),
            buildkit_verify=parse_flag(value("buildkit_verify"), "buildkit_verify"),
            buildkit_takeover=parse_flag(value("buildkit_takeover"), "buildkit_takeover"),
            buildkit_drain_timeout=_seconds(value("buildkit_drain_timeout"), "buildkit_drain_timeout", minimum=0),
            buildkit_verify_timeout=_seconds(value("buildkit_verify_timeout"), "buildkit_verify_timeout"),
        )
    except ReleaseError as error:
        raise SettingError(str(error)) from error


def unknown_key_warnings(keys: Iterable[str]) -> list[str]:
    """Warnings for data keys that look like a misspelt setting (``nerdctl_verison``)."""
    known = set(DEFAULTS)
    return [
        _unknown_key_message(key)
        for key in sorted(keys)
        if key not in known and difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    ]


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, DEFAULTS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown setting {key!r}{hint}"


def _containerd_config(value: Any) -> dict[str, Any] | None:
    """A dict rendered to /etc/containerd/config.toml (``--data`` may pass it as JSON)."""
    return _config_dict(value, "containerd_config") or None


def _config_dict(value: Any, key: str) -> dict[str, Any]:
    """A dict of TOML settings, or JSON of one (as ``--data`` passes it); empty when unset."""
    if value in (None, "", {}):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise SettingError(f"{key}={value!r} is neither a dict nor JSON of one") from error
    if not isinstance(value, dict):
        raise SettingError(f"{key}={value!r} is not a dict of settings")
    return value


def _checked_config(value: Any, key: str, full: bool) -> dict[str, Any]:
    """``buildkitd_config`` or ``nerdctl_config``: types and owned keys checked (unknown keys warn later)."""
    config = _config_dict(value, key)
    try:
        config_warnings(key, config, full)
    except ConfigError as error:
        raise SettingError(str(error)) from error
    return config


def config_warnings(key: str, config: dict[str, Any], full: bool) -> list[str]:
    """Warnings for keys of ``buildkitd_config`` or ``nerdctl_config`` that upstream does not know."""
    if key == "buildkitd_config":
        return check_buildkitd_config(config)
    return check_nerdctl_config(config, full)


def settings_warnings(settings: Settings) -> list[str]:
    """Warnings about checked settings: unknown config keys (the daemon would ignore or refuse them)."""
    return config_warnings("buildkitd_config", settings.buildkitd_config, settings.full) + config_warnings(
        "nerdctl_config", settings.nerdctl_config, settings.full
    )


def _version(value: Any, key: str, default: str) -> str:
    return default if value is None else normalise_version(value, key)


def _github_url(value: Any) -> str:
    """An http(s) URL, or a folder on the controller as ``file:///path`` (a plain ``/path`` too)."""
    url = str(value).strip().rstrip("/")
    if url.startswith("/"):
        url = f"file://{url}"
    parsed = urlparse(url)
    if parsed.scheme == "file" and not parsed.netloc and parsed.path.startswith("/"):
        if not os.path.isdir(parsed.path):
            raise SettingError(f"github_url={value!r} is not a folder on the controller")
        return url
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingError(
            f"github_url={value!r} is neither an http(s) URL (e.g. https://github.com) nor a folder on the controller"
        )
    return url


def _absolute_path(value: Any, key: str) -> str:
    """An absolute path of plain characters: it goes into unit files, shell scripts and profile aliases."""
    path = str(value).strip()
    if not PLAIN_PATH.match(path):
        raise SettingError(f"{key}={value!r} must be an absolute path of letters, digits and ._+-/ only")
    return path.rstrip("/") or "/"


def _controller_path(value: Any, key: str) -> str:
    """An absolute path on the controller, any characters its filesystem allows (``~`` expanded).

    It never reaches a host, so the host-path character rules do not apply; whether it
    can be created is known when it is used.
    """
    path = os.path.expanduser(str(value).strip())
    if not os.path.isabs(path):
        raise SettingError(f"{key}={value!r} must be an absolute path on the controller")
    return path


def _containerd_address(value: Any) -> str:
    address = str(value).strip()
    path = address.removeprefix("unix://")
    if "://" in path or not path.startswith("/"):
        raise SettingError(
            f"containerd_address={value!r} must be a socket path or unix:// URL (e.g. /run/containerd/containerd.sock)"
        )
    _absolute_path(path, "containerd_address")
    return address


def _namespace(value: Any) -> str:
    namespace = str(value).strip()
    if not NAMESPACE_NAME.match(namespace):
        raise SettingError(f"containerd_namespace={value!r} is not a containerd namespace name (e.g. default, k8s.io)")
    return namespace


def _group(value: Any) -> str | None:
    if value in (None, "", False):
        return None
    group = str(value).strip()
    if not GROUP_NAME.match(group):
        raise SettingError(f"buildkit_socket_group={value!r} is not a valid group name (e.g. buildkit)")
    return group


def _seconds(value: Any, key: str, minimum: int = 1) -> int:
    """A whole number of seconds, at least ``minimum`` (``--data`` passes a number, a keyword may pass a string)."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < minimum:
        at_least = " (0: do not wait)" if minimum == 0 else ", at least 1"
        raise SettingError(f"{key}={value!r} is not a whole number of seconds{at_least} (e.g. 600)")
    return int(text)


def parse_flag(value: Any, key: str) -> bool:
    """A yes/no setting (a bool, or words such as ``true``/``off``); else a ``SettingError`` naming ``key``."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingError(f"{key}={value!r} is not a yes/no value")
