"""Every setting of the deploys (the build host's and the rootless ones): defaults, lookup order and checks.

A setting comes from a keyword argument, else host data (inventory, group data,
``--data``), else its default. All of it is checked here, before anything
touches a host; nothing in this module needs a host.

Each setting is declared once, as a field of ``Settings`` (or ``RootlessSettings``):
its type, default, check and the line the settings table of the docs shows for it.
``DEFAULTS``, the lookup, the unknown-key hints and the tables derive from those
fields (tests/test_settings_table.py holds the docs' tables equal to them).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlparse

from ..certs import default_ca_dir, name_kind
from ..layout import CONTAINERD_SOCKET, DEFAULT_BIN_DIR, DEFAULT_FULL_PREFIX
from .config_schema import ConfigError, check_buildkitd_config, check_nerdctl_config
from .controller import default_cache_dir
from .releases import (
    BUILDKIT,
    NERDCTL,
    Release,
    ReleaseError,
    default_version,
    normalise_sha256,
    normalise_version,
)
from .trust import missing_gpg_programs

FLAVORS = ("minimal", "full")
NETWORKS = ("slirp4netns", "host")
PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._+/-]*$")
GROUP_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}\$?$")
NAMESPACE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,74}[A-Za-z0-9])?$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


class SettingError(ValueError):
    """A setting whose value cannot work; the message names the key and the value."""


@dataclass(frozen=True)
class Declared:
    """One setting: its default, its check and its row in the docs' settings table."""

    default: Any
    # (value, key, *needs' checked values) -> the checked value; a SettingError names the key and the value.
    check: Callable[..., Any]
    help: str
    note: str = ""  # said after the default in the table
    needs: tuple[str, ...] = ()  # settings checked first, whose checked values the check takes after ``key``
    shown: str = ""  # the default as the table shows it, when the check computes it from ``None``

    def shown_default(self) -> str:
        if self.shown:
            shown = self.shown
        elif self.default is None:
            shown = "none"
        elif isinstance(self.default, bool):
            shown = "on" if self.default else "off"
        else:
            shown = f"`{self.default}`"
        return f"{shown} ({self.note})" if self.note else shown


def setting(default: Any, check: Callable[..., Any], help: str, **more: Any) -> Any:
    """A dataclass field declaring a setting (see ``Declared``)."""
    return field(metadata={"setting": Declared(default, check, help, **more)})


def _version_of(product: Release) -> Callable[[Any, str], str]:
    """The check of ``nerdctl_version`` or ``buildkit_version``: unset is the newest pinned release."""

    def check(value: Any, key: str) -> str:
        return default_version(product) if value is None else normalise_version(value, key)

    return check


def _one_of(choices: tuple[str, str]) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        word = str(value).strip()
        if word not in choices:
            raise SettingError(f"{key}={value!r} is neither {choices[0]!r} nor {choices[1]!r}")
        return word

    return check


def _namespace(example: str) -> Callable[[Any, str], str]:
    def check(value: Any, key: str) -> str:
        namespace = str(value).strip()
        if not NAMESPACE_NAME.match(namespace):
            raise SettingError(f"{key}={value!r} is not a containerd namespace name (e.g. {example})")
        return namespace

    return check


def _user_name(value: Any, key: str) -> str:
    if value is None or str(value).strip() == "":
        raise SettingError(f"{key} is not set: name the existing user who gets rootless BuildKit")
    if not USER_NAME.match(str(value).strip()):
        raise SettingError(f"{key}={value!r} is not a user name (lower-case letters, digits, ._-)")
    return str(value).strip()


def _bin_dir(value: Any, key: str, flavor: str, full_prefix: str) -> str:
    bin_dir = _absolute_path(value, key)
    if flavor != "full":
        return bin_dir
    # The full archive's binaries live in its bin/; bin_dir follows full_prefix.
    if bin_dir != DEFAULT_BIN_DIR and bin_dir != f"{full_prefix}/bin":
        raise SettingError(f"{key}={bin_dir!r} cannot be set with nerdctl_flavor='full': set full_prefix")
    return f"{full_prefix.rstrip('/')}/bin"


def _containerd_config(value: Any, key: str) -> dict[str, Any] | None:
    """A dict rendered to /etc/containerd/config.toml (``--data`` may pass it as JSON)."""
    return _config_dict(value, key) or None


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


def _checked_config(value: Any, key: str, flavor: str) -> dict[str, Any]:
    """``buildkitd_config`` or ``nerdctl_config``: types and owned keys checked (unknown keys warn later)."""
    config = _config_dict(value, key)
    try:
        config_warnings(key, config, flavor == "full")
    except ConfigError as error:
        raise SettingError(str(error)) from error
    return config


def _github_url(value: Any, key: str) -> str:
    """An http(s) URL, or a folder on the controller as ``file:///path`` (a plain ``/path`` too)."""
    url = str(value).strip().rstrip("/")
    if url.startswith("/"):
        url = f"file://{url}"
    parsed = urlparse(url)
    if parsed.scheme == "file" and not parsed.netloc and parsed.path.startswith("/"):
        if not os.path.isdir(parsed.path):
            raise SettingError(f"{key}={value!r} is not a folder on the controller")
        return url
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingError(
            f"{key}={value!r} is neither an http(s) URL (e.g. https://github.com) nor a folder on the controller"
        )
    return url


def _absolute_path(value: Any, key: str) -> str:
    """An absolute path of plain characters: it goes into unit files, shell scripts and profile aliases."""
    path = str(value).strip()
    if not PLAIN_PATH.match(path):
        raise SettingError(f"{key}={value!r} must be an absolute path of letters, digits and ._+-/ only")
    return path.rstrip("/") or "/"


def _cache_dir(value: Any, key: str) -> str:
    return _controller_path(value or default_cache_dir(), key)


def _remote_address(value: Any, key: str) -> str | None:
    """``IP:PORT`` (``[IPv6]:PORT``) or ``:PORT`` (every address) for buildkitd's TCP listener; off when unset."""
    if value in (None, "", False):
        return None
    text = str(value).strip()
    host, colon, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host) if host else None
    except ValueError:
        address = None
    if (
        not colon
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or (host and address is None)
        or (address is not None and address.version == 6) != bracketed
    ):
        raise SettingError(f"{key}={value!r} is neither IP:PORT nor :PORT (e.g. 10.0.0.5:1234 or :1234)")
    return f"{f'[{address}]' if bracketed else address or ''}:{int(port)}"


def _remote_names(value: Any, key: str) -> tuple[str, ...]:
    """Extra DNS names or IP addresses for the hosts' server certificates: a list, or words split by commas."""
    if value in (None, "", False):
        return ()
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)):
        raise SettingError(f"{key}={value!r} is not a list of DNS names or IP addresses")
    checked = tuple(str(name).strip() for name in names if str(name).strip())
    for name in checked:
        if name_kind(name) is None:
            raise SettingError(f"{key}={value!r}: {name!r} is neither a DNS name nor an IP address")
    return checked


def _ca_dir(value: Any, key: str, remote_address: str | None) -> str:
    """The CA's folder on the controller; with a remote address, one the controller can make or use."""
    path = _controller_path(value or default_ca_dir(), key)
    if remote_address is None:
        return path
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    usable = os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)
    if existing == path and not usable:
        # A CA someone made for this user to read is enough: nothing is written then.
        usable = os.access(os.path.join(path, "ca-key.pem"), os.R_OK) and os.access(os.path.join(path, "ca.pem"), os.R_OK)
    if not usable:
        raise SettingError(f"{key}={value or path!r} is not writable on the controller ({existing}): the CA cannot be made there")
    return path


def _controller_path(value: Any, key: str) -> str:
    """An absolute path on the controller, any characters its filesystem allows (``~`` expanded).

    It never reaches a host, so the host-path character rules do not apply; whether it
    can be created is known when it is used.
    """
    path = os.path.expanduser(str(value).strip())
    if not os.path.isabs(path):
        raise SettingError(f"{key}={value!r} must be an absolute path on the controller")
    return path


def _gpg_keyring(value: Any, key: str) -> str | None:
    """A public key file on the controller, for gpg and gpgv, which must be installed there."""
    if value in (None, ""):
        return None
    path = _controller_path(value, key)
    if not os.path.isfile(path):
        raise SettingError(f"{key}={value!r} is not a file on the controller")
    missing = missing_gpg_programs()
    if missing:
        raise SettingError(f"{key} is set but the controller has no {' or '.join(missing)} (Debian: gpg, gpgv)")
    return path


def _containerd_address(value: Any, key: str) -> str:
    address = str(value).strip()
    path = address.removeprefix("unix://")
    if "://" in path or not path.startswith("/"):
        raise SettingError(
            f"{key}={value!r} must be a socket path or unix:// URL (e.g. /run/containerd/containerd.sock)"
        )
    _absolute_path(path, key)
    return address


def _group(value: Any, key: str) -> str | None:
    if value in (None, "", False):
        return None
    group = str(value).strip()
    if not GROUP_NAME.match(group):
        raise SettingError(f"{key}={value!r} is not a valid group name (e.g. buildkit)")
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


@dataclass(frozen=True)
class Settings:
    """The build-host settings, in the order of the README's table."""

    key_prefix: ClassVar[str] = ""
    # bin_dir, with the flavor and prefix it follows, is checked before the rest: a wrong flavor is the error named.
    checked_first: ClassVar[tuple[str, ...]] = ("bin_dir",)

    nerdctl_version: str = setting(
        None,
        _version_of(NERDCTL),
        "nerdctl release, `2.3.5` or `v2.3.5`",
        shown=f"`{default_version(NERDCTL)}`",
        note="the newest release that a named source pins for amd64 and arm64",
    )
    buildkit_version: str = setting(
        None,
        _version_of(BUILDKIT),
        "BuildKit release, `0.12.5` or `v0.12.5`",
        shown=f"`{default_version(BUILDKIT)}`",
        note="the newest release that a named source pins for amd64 and arm64",
    )
    github_url: str = setting(
        "https://github.com",
        _github_url,
        "base URL of the releases. A mirror must keep github.com's paths (`/containerd/nerdctl/releases/download/v{V}/...`), as in kubespray's offline mode. It may also be a folder on the controller (`/srv/releases` or `file:///srv/releases`) with the same layout, and then the controller delivers the archives",
    )
    nerdctl_sha256: str | None = setting(
        None, normalise_sha256, "SHA-256 pin of the nerdctl archive for this host's architecture"
    )
    buildkit_sha256: str | None = setting(
        None, normalise_sha256, "SHA-256 pin of the BuildKit archive for this host's architecture"
    )
    nerdctl_gpg_keyring: str | None = setting(
        None,
        _gpg_keyring,
        "an armored file of public keys on the controller: nerdctl archives are installed only when the release's `SHA256SUMS.asc` is a good signature of its `SHA256SUMS` by one of them, and that file lists the archive with the expected hash (see [Trust](docs/trust.md#nerdctls-signed-sha256sums))",
    )
    bin_dir: str = setting(
        DEFAULT_BIN_DIR,
        _bin_dir,
        "where the binaries go: an absolute path of letters, digits and `._+-/`, because it is written into the unit file and the alias",
        needs=("nerdctl_flavor", "full_prefix"),
    )
    containerd_address: str = setting(
        CONTAINERD_SOCKET, _containerd_address, "containerd's socket, as a path or a `unix://` URL"
    )
    containerd_namespace: str = setting(
        "default", _namespace("default, k8s.io"), "containerd namespace for nerdctl and BuildKit's worker"
    )
    buildkit_socket_group: str | None = setting(
        None,
        _group,
        "group that may use the BuildKit socket. It is created if missing, and the socket becomes `root:GROUP 0660`",
        note="root only",
    )
    nerdctl_docker_alias: bool = setting(
        False, parse_flag, "in login shells, `docker` runs nerdctl, but never where a real `docker` exists"
    )
    download_on_controller: bool = setting(
        False,
        parse_flag,
        "the controller fetches each needed archive once, verifies it, and uploads it to the hosts that need it, so hosts need no route to any mirror",
    )
    release_cache_dir: str = setting(
        None,
        _cache_dir,
        "the controller's verified archives, kept between runs. Any absolute path on the controller (spaces included); it is created when it is first used",
        shown="`~/.cache/pyinfra-nerdctl/releases`",
        note="`$XDG_CACHE_HOME` if set",
    )
    nerdctl_flavor: str = setting(
        "minimal",
        _one_of(FLAVORS),
        "`minimal`: nerdctl and BuildKit archives for a host that already runs containerd. `full`: the nerdctl-full archive, containerd included (see [Flavors](docs/flavors-and-k3s.md#flavors))",
    )
    full_prefix: str = setting(
        DEFAULT_FULL_PREFIX,
        _absolute_path,
        "where the full archive is unpacked (`bin/`, `lib/`, `libexec/cni/`, `share/doc/`). With `full`, `bin_dir` is `{full_prefix}/bin`",
    )
    containerd_config: dict[str, Any] | None = setting(
        None,
        _containerd_config,
        "full flavor only: a dict (or JSON of one with `--data`) written as `/etc/containerd/config.toml`",
        note="containerd's built-in defaults",
    )
    host_lock_wait: int = setting(
        600,
        _seconds,
        "seconds an install or removal waits for another run of this package on the same host (see [Two runs at once](docs/deploys.md#two-runs-at-once))",
    )
    buildkitd_config: dict[str, Any] = setting(
        None,
        _checked_config,
        "a dict (or JSON of one with `--data`) merged into `/etc/buildkit/buildkitd.toml`: registries, GC, `[log]`, `[history]`, and the rest of upstream's keys (see [Configuring BuildKit and nerdctl](docs/configuration.md#configuring-buildkit-and-nerdctl))",
        needs=("nerdctl_flavor",),
    )
    nerdctl_config: dict[str, Any] = setting(
        None,
        _checked_config,
        "a dict (or JSON of one) merged into `/etc/nerdctl/nerdctl.toml`: `hosts_dir`, `insecure_registry`, `snapshotter`, `cgroup_manager`, `data_root`, `experimental`, ...",
        needs=("nerdctl_flavor",),
    )
    k3s_registries: bool = setting(
        True,
        parse_flag,
        "on a host with k3s's `/etc/rancher/k3s/registries.yaml`, BuildKit gets its mirrors, plain-HTTP endpoints, CA files, client certificates and insecure flags, and nerdctl gets k3s's `certs.d` in `hosts_dir`. A registry's own table in `buildkitd_config`, or a `hosts_dir` in `nerdctl_config`, wins (see [Registries from k3s](docs/flavors-and-k3s.md#registries-from-k3s)). Off: k3s's files are not read",
        note="used where k3s's configuration exists",
    )
    buildkit_verify: bool = setting(
        True,
        parse_flag,
        "after a run that changed BuildKit's binaries, config or units, check that BuildKit answers with the containerd worker, and go back to the last working setup if it does not (see [Proof that the host builds](docs/configuration.md#proof-that-the-host-builds)). Off: nothing starts buildkitd during a deploy",
    )
    buildkit_takeover: bool = setting(
        False,
        parse_flag,
        "on a host where something else runs BuildKit (the usual recipe set up by hand, a hand-installed nerdctl-full), stop and disable it and run this package's units instead. Off: such a host is refused before anything changes (see [Coming from the recipe](docs/units.md#coming-from-the-recipe))",
    )
    buildkit_drain_timeout: int = setting(
        600,
        partial(_seconds, minimum=0),
        "before a run restarts or stops a running `buildkit.service` (a config, unit or version change, a flavor switch, a takeover, a removal), it waits this many seconds for the builds in flight to end; builds still running then fail the host, and nothing is restarted (see [Builds in flight](docs/configuration.md#builds-in-flight)). `0`: do not wait. Also the unit's `TimeoutStopSec` (at least 90)",
    )
    buildkit_verify_timeout: int = setting(
        300,
        _seconds,
        "how long the check after a change waits for a daemon that is still stopping or starting, and the unit's `TimeoutStartSec`: buildkitd opens its cache at start, which upstream has seen take minutes on big caches (moby/buildkit#4267), and a stop that finishes a build takes as long as the build (see [Proof that the host builds](docs/configuration.md#proof-that-the-host-builds))",
    )
    buildkit_remote_address: str | None = setting(
        None,
        _remote_address,
        "`IP:PORT`, or `:PORT` for every address: BuildKit also listens there over TCP with mutual TLS, for `docker buildx create --driver remote` and `buildctl --addr tcp://...`, and runs all the time (see [Remote builders](docs/remote.md#remote-builders)). Unset: the unix socket only, and a host's TLS files go",
        shown="off",
    )
    buildkit_ca_dir: str = setting(
        None,
        _ca_dir,
        "the folder on the controller holding the fleet's CA for `buildkit_remote_address` (`ca.pem`, `ca-key.pem` at 0600, which never leaves it); created on first use",
        shown="`~/.config/pyinfra-nerdctl/ca`",
        note="`$XDG_CONFIG_HOME` if set",
        needs=("buildkit_remote_address",),
    )
    buildkit_remote_names: tuple[str, ...] = setting(
        None,
        _remote_names,
        "extra DNS names or IP addresses for each host's server certificate, beside its inventory name, its SSH address and the IP of `buildkit_remote_address`: a list, or names split by commas",
    )

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


@dataclass(frozen=True)
class RootlessSettings:
    """The ``rootless_*`` settings of ``install_rootless``, in the order of docs/rootless.md's table."""

    key_prefix: ClassVar[str] = "rootless_"
    checked_first: ClassVar[tuple[str, ...]] = ()

    user: str = setting(
        None, _user_name, "the existing, non-root user who gets rootless containerd and BuildKit", note="required"
    )
    namespace: str = setting(
        "default",
        _namespace("default"),
        "containerd namespace of the user's BuildKit worker and of the user's nerdctl, so that built images show in `nerdctl images`",
    )
    network: str = setting(
        "slirp4netns",
        _one_of(NETWORKS),
        "the network of the user's containerd and of `RUN` steps: `slirp4netns` or `host` (see below)",
    )
    packages: bool = setting(
        True,
        parse_flag,
        "install what is missing of `uidmap` (`newuidmap`, `newgidmap`), `rootlesskit`, `slirp4netns` and `dbus-user-session` with pyinfra's `apt.packages`. Off: nothing is installed, and a missing program is an error",
    )


def declared(cls: type[Settings] | type[RootlessSettings]) -> dict[str, Declared]:
    """The settings of ``cls`` (``Settings`` or ``RootlessSettings``) by key, in their declared order."""
    return {cls.key_prefix + each.name: each.metadata["setting"] for each in fields(cls)}


DEFAULTS: dict[str, Any] = {key: each.default for key, each in declared(Settings).items()}
ROOTLESS_DEFAULTS: dict[str, Any] = {key: each.default for key, each in declared(RootlessSettings).items()}


def settings_table(cls: type[Settings] | type[RootlessSettings]) -> str:
    """The docs' table of the settings of ``cls`` (README.md: ``Settings``; docs/rootless.md: ``RootlessSettings``)."""
    rows = [f"| `{key}` | {each.shown_default()} | {each.help} |" for key, each in declared(cls).items()]
    return "\n".join(["| key | default | meaning |", "|---|---|---|", *rows])


def resolve_settings(lookup: Callable[[str], Any], overrides: Mapping[str, Any]) -> Settings:
    """Settings from ``overrides`` (keyword arguments), else ``lookup`` (host data), else defaults.

    >>> resolve_settings({}.get, {"buildkit_version": "v0.12.5"}).buildkit_version
    '0.12.5'
    """
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise SettingError("; ".join(_unknown_key_message(key) for key in sorted(unknown)))
    return _resolve(Settings, lookup, overrides)


def resolve_rootless_settings(lookup: Callable[[str], Any], overrides: Mapping[str, Any]) -> RootlessSettings:
    """The ``rootless_*`` settings from ``overrides`` (keywords), else ``lookup`` (host data), else defaults.

    >>> resolve_rootless_settings({}.get, {"rootless_user": "alice"}).network
    'slirp4netns'
    """
    return _resolve(RootlessSettings, lookup, overrides)


# Either settings class: ``_resolve`` returns the one it is given.
S = TypeVar("S", "Settings", "RootlessSettings")


def _resolve(cls: type[S], lookup: Callable[[str], Any], overrides: Mapping[str, Any]) -> S:
    """``cls`` with each setting checked; a setting's ``needs`` are checked before it."""
    declarations = declared(cls)
    checked: dict[str, Any] = {}

    def value(key: str) -> Any:
        if overrides.get(key) is not None:
            return overrides[key]
        found = lookup(key)
        return declarations[key].default if found is None else found

    def check(key: str) -> Any:
        if key not in checked:
            declaration = declarations[key]
            checked[key] = declaration.check(value(key), key, *map(check, declaration.needs))
        return checked[key]

    try:
        for key in cls.checked_first:
            check(key)
        return cls(**{each.name: check(cls.key_prefix + each.name) for each in fields(cls)})
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
