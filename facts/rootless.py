"""The rootless side of a build host: one user's own containerd and BuildKit.

``RootlessState`` reads, in one remote command run as root, everything the rootless
deploys decide from: the user, the host's support for unprivileged user namespaces,
the programs rootless containerd needs, the subordinate ID ranges, lingering, the
user's managed files and the user's units. Usable from the CLI:
``pyinfra INVENTORY fact pyinfra_nerdctl.facts.RootlessState user=alice``.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from ..layout import (
    DEFAULT_BIN_DIR,
    DEFAULT_FULL_PREFIX,
    LINGER_DIR,
    ROOTLESS_STATE_DIR,
    SUBID_FILES,
    UNITS,
    USER_BUILDKIT_CONFIG,
    USER_BUILDKIT_SOCKET,
    USER_CONTAINERD_FILE,
    USER_DATA_DIR,
    USER_DBUS_SOCKET,
    USER_GOOD_DIR,
    USER_NERDCTL_CONFIG,
    USER_RUNTIME_DIR,
    USER_SERVICE_FILE,
    USER_SOCKET_FILE,
    USER_UNIT_FILES,
)
from .common import PLATFORM_COMMAND, STAT_FIELDS, file_kind, in_c_locale, parse_key_values, platform_from
from .state import parse_managed_paths
from .types import AccountDict, RootlessSocketDict, RootlessStateDict, UnitStateDict
from .units import UNIT_PROPERTIES, parse_unit_freshness

# Programs looked up on PATH (the full archive's bin first): what rootless containerd runs.
PROGRAMS = ("newuidmap", "newgidmap", "rootlesskit", "slirp4netns", "containerd", "apt-get")
# Programs the system install puts into bin_dir.
INSTALLED = ("nerdctl", "containerd-rootless.sh", "containerd-rootless-setuptool.sh", "buildkitd", "buildctl")
NO_UNIT: UnitStateDict = {"enabled": False, "active": False, "needs_daemon_reload": False, "stale": False}


def marker_path(user: str, what: str) -> str:
    """Where the deploy records that it, not the operator, turned ``what`` (linger, subids) on for ``user``."""
    return f"{ROOTLESS_STATE_DIR}/{user}.{what}"


def socket_path(uid: int | str, namespace: str) -> str:
    """The user's BuildKit socket, where rootless nerdctl looks first for ``namespace``."""
    return USER_BUILDKIT_SOCKET.format(uid=uid, namespace=namespace)


def user_runtime_env(uid: str) -> str:
    """The environment a command needs to reach the user's systemd manager (``runuser`` keeps it)."""
    runtime = USER_RUNTIME_DIR.format(uid=uid)
    return f'XDG_RUNTIME_DIR="{runtime}" DBUS_SESSION_BUS_ADDRESS="unix:path={runtime}/bus"'


def data_folders(namespace: str) -> tuple[str, ...]:
    """The user's images, build cache and nerdctl state, relative to the home folder (what ``purge`` removes)."""
    share = USER_DATA_DIR
    return (f"{share}/containerd", f"{share}/buildkit-{namespace}", f"{share}/nerdctl", f"{share}/cni")


def parse_passwd(line: str | None) -> AccountDict | None:
    """A ``getent passwd`` line to ``{"uid", "gid", "home"}``; None when absent or malformed.

    >>> parse_passwd("alice:x:1001:1001:Alice:/home/alice:/bin/bash")
    {'uid': 1001, 'gid': 1001, 'home': '/home/alice'}
    """
    parts = (line or "").split(":")
    if len(parts) != 7 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return {"uid": int(parts[2]), "gid": int(parts[3]), "home": parts[5]}


def parse_subid_lines(lines: list[str]) -> list[tuple[str, int, int]]:
    """``/etc/subuid`` lines (``name:start:count``) to ``(name, start, count)``; malformed lines are skipped.

    >>> parse_subid_lines(["alice:100000:65536", "# note", "bob:x:1"])
    [('alice', 100000, 65536)]
    """
    ranges = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((parts[0], int(parts[1]), int(parts[2])))
    return ranges


def _prefixed(lines: list[str], prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def parse_subid_marker(value: str | None) -> list[int] | None:
    """The ``FIRST-LAST`` range this package added (its marker's content) as ``[start, count]``, else None.

    >>> parse_subid_marker("165536-231071")
    [165536, 65536]
    """
    first, _, last = (value or "").strip().partition("-")
    if not (first.isdigit() and last.isdigit()):
        return None
    return [int(first), int(last) - int(first) + 1]


def parse_userns(max_user_namespaces: str | None, unprivileged_userns_clone: str | None) -> str | None:
    """Why the kernel refuses unprivileged user namespaces, or None when it allows them.

    >>> parse_userns("0", None)
    'user.max_user_namespaces=0'
    """
    if (max_user_namespaces or "").strip() == "0":
        return "user.max_user_namespaces=0"
    if (unprivileged_userns_clone or "").strip() == "0":
        return "kernel.unprivileged_userns_clone=0"
    return None


def rootless_state_command(user: str, bin_dir: str, namespace: str, full_prefix: str) -> str:
    """The shell command of ``RootlessState`` (run as root; prints ``key=value`` lines)."""
    quoted = shlex.quote(user)
    bin_q = shlex.quote(bin_dir)
    full_bin = shlex.quote(f"{full_prefix}/bin")
    return "; ".join(
        [
            PLATFORM_COMMAND,
            f"echo user={quoted}",
            f"echo namespace={shlex.quote(namespace)}",
            f'entry=$(getent passwd {quoted}) && echo "passwd=$entry"',
            *_host_lines(user, bin_q, full_bin),
            'home=$(echo "$entry" | cut -d: -f6); uid=$(echo "$entry" | cut -d: -f3)',
            *_user_lines(quoted, namespace),
            f"TZ=UTC stat -c 'ctime.socket=%z' \"$home\"/{USER_SOCKET_FILE} 2>/dev/null",
            f"TZ=UTC stat -c 'ctime.service=%z' {bin_q}/buildkitd \"$home\"/{USER_SERVICE_FILE} "
            f'"$home"/{USER_BUILDKIT_CONFIG} 2>/dev/null',
            f"TZ=UTC stat -c 'ctime.containerd=%z' {bin_q}/containerd-rootless.sh "
            f'"$(PATH={full_bin}:"$PATH" command -v containerd)" "$home"/{USER_CONTAINERD_FILE} 2>/dev/null',
            "true",
        ]
    )


def _host_lines(user: str, bin_q: str, full_bin: str) -> list[str]:
    """What the host offers the user: lingering, subordinate IDs, user namespaces, programs, the user's D-Bus."""
    quoted = shlex.quote(user)
    markers = {what: shlex.quote(marker_path(user, what)) for what in ("linger", "subids")}
    return [
        f"[ -e {LINGER_DIR}/{quoted} ] && echo linger=yes",
        f"[ -e {markers['linger']} ] && echo linger_ours=yes",
        f'[ -e {markers["subids"]} ] && echo "subids_ours=$(cat {markers["subids"]})"',
        *(f"sed 's/^/sub{kind}=/' {path} 2>/dev/null" for kind, path in SUBID_FILES.items()),
        'echo "max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null)"',
        'echo "unprivileged_userns_clone=$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null)"',
        f'for p in {" ".join(PROGRAMS)}; do found=$(PATH={full_bin}:"$PATH" command -v "$p") && echo "program.$p=$found"; done',
        f'for p in {" ".join(INSTALLED)}; do [ -x {bin_q}/"$p" ] && echo "installed.$p=yes"; done',
        f"[ -e {USER_DBUS_SOCKET} ] && echo user_dbus=yes",
    ]


def _user_lines(quoted: str, namespace: str) -> list[str]:
    """The user's files, data, socket and units (``$entry``, ``$home`` and ``$uid`` are the user's)."""
    user_files = " ".join((*USER_UNIT_FILES, USER_BUILDKIT_CONFIG, USER_NERDCTL_CONFIG))
    units = " ".join(UNITS.values())
    # Listen: where the running socket listens, which a namespace change moves only once it restarts.
    properties = f"{UNIT_PROPERTIES},Listen"
    runtime = USER_RUNTIME_DIR.format(uid='"$uid"')
    socket = USER_BUILDKIT_SOCKET.format(uid='"$uid"', namespace=shlex.quote(namespace))
    return [
        # Relative to the home folder: the paths are known only on the host.
        f'if [ -n "$entry" ] && cd "$home" 2>/dev/null; then echo home_exists=yes; '
        f"stat -c 'path=%n|{STAT_FIELDS}' {user_files} 2>/dev/null; sha256sum {user_files} 2>/dev/null; "
        f'for d in {" ".join(data_folders(namespace))}; do [ -d "$d" ] && echo "data=$d"; done; '
        f"[ -d {USER_GOOD_DIR} ] && echo good_copies=yes; fi",
        f"[ -n \"$entry\" ] && stat -c 'socket_stat=%f|%a|%U' {socket} 2>/dev/null",
        # The user's manager answers only while it runs (lingering or a login).
        f'if [ -n "$entry" ] && [ -S {runtime}/systemd/private ]; then echo manager=yes; '
        f"{{ runuser -u {quoted} -- env {user_runtime_env('$uid')} systemctl --user show --timestamp=us+utc "
        f"-p {properties} {units} 2>/dev/null || runuser -u {quoted} -- env {user_runtime_env('$uid')} "
        f"systemctl --user show -p {properties} {units}; }} 2>/dev/null | sed 's/^/unit./'; fi",
    ]


def _listening(listen: str | None) -> str | None:
    """The path of systemd's ``Listen=/run/user/1001/buildkit-default/buildkitd.sock (Stream)``; None: none.

    >>> _listening("/run/user/1001/buildkit-default/buildkitd.sock (Stream)")
    '/run/user/1001/buildkit-default/buildkitd.sock'
    """
    path = (listen or "").split(" ")[0]
    return path if path.startswith("/") else None


def parse_rootless_state(lines: list[str]) -> RootlessStateDict:
    """Lines of ``rootless_state_command`` to the ``RootlessState`` shape."""
    values = parse_key_values(lines)
    account = parse_passwd(values.get("passwd"))
    subuids, subgids = (parse_subid_lines(_prefixed(lines, f"{kind}=")) for kind in ("subuid", "subgid"))
    user = values.get("user", "")
    manager = values.get("manager") == "yes"
    units = parse_unit_freshness(lines)
    return {
        **platform_from(values),
        "user": user,
        "exists": account is not None,
        "uid": account["uid"] if account else None,
        "gid": account["gid"] if account else None,
        "home": account["home"] if account else None,
        "home_exists": values.get("home_exists") == "yes",
        "lingering": values.get("linger") == "yes",
        "lingering_ours": values.get("linger_ours") == "yes",
        "subids_ours": parse_subid_marker(values.get("subids_ours")),
        "subuid": [[start, count] for name, start, count in subuids if name == user],
        "subgid": [[start, count] for name, start, count in subgids if name == user],
        "all_subuid": subuids,
        "all_subgid": subgids,
        "userns_refused": parse_userns(values.get("max_user_namespaces"), values.get("unprivileged_userns_clone")),
        "programs": {key[len("program.") :]: value for key, value in values.items() if key.startswith("program.")},
        "installed": sorted(key[len("installed.") :] for key in values if key.startswith("installed.")),
        "user_dbus": values.get("user_dbus") == "yes",
        "files": parse_managed_paths(lines) if account else {},
        "data": _prefixed(lines, "data="),
        "good_copies": values.get("good_copies") == "yes",
        "manager": manager,
        # Unit names as keys, as the user's systemctl knows them; all off while no manager runs.
        "units": {name: units[key] if manager else NO_UNIT for key, name in UNITS.items()},
        "socket": _socket(lines, values, account, manager),
    }


def _socket(lines: list[str], values: dict[str, str], account: AccountDict | None, manager: bool) -> RootlessSocketDict:
    """``RootlessState["socket"]``: where the user's BuildKit listens for its namespace, and where it listens now."""
    raw_mode = (values.get("socket_stat") or "").split("|")[0]
    return {
        "path": socket_path(account["uid"], values.get("namespace", "default")) if account else None,
        "exists": bool(raw_mode) and file_kind(raw_mode) == "socket",
        # Only the socket unit has Listen (the first non-empty one, whatever systemctl prints for the others).
        "listening": next(filter(None, map(_listening, _prefixed(lines, "unit.Listen="))), None) if manager else None,
    }


class RootlessState(FactBase[RootlessStateDict | None]):
    """One user's rootless containerd and BuildKit, and what the host offers for them.

    ``files`` are the user's managed files, relative to the home folder; ``units`` the
    user's units (known while the user's systemd manager runs); ``socket`` where the
    user's BuildKit listens for ``namespace`` (``path``), and where the running socket unit
    listens now (``listening``, None while it does not).

    .. code:: python

        {"user": "alice", "exists": True, "uid": 1001, "gid": 1001, "home": "/home/alice",
         "lingering": True, "subuid": [[100000, 65536]], "subgid": [[100000, 65536]],
         "userns_refused": None, "programs": {"rootlesskit": "/usr/bin/rootlesskit", ...},
         "units": {"containerd.service": {"enabled": True, "active": True, ...}, ...},
         "socket": {"path": "/run/user/1001/buildkit-default/buildkitd.sock", "exists": True,
                    "listening": "/run/user/1001/buildkit-default/buildkitd.sock"}, ...}
    """

    def command(
        self,
        user: str,
        bin_dir: str = DEFAULT_BIN_DIR,
        namespace: str = "default",
        full_prefix: str = DEFAULT_FULL_PREFIX,
    ) -> str:
        return in_c_locale(rootless_state_command(user, bin_dir, namespace, full_prefix))

    def process(self, output: list[str]) -> RootlessStateDict:
        return parse_rootless_state(output)

    @staticmethod
    def default() -> None:
        """None: the host could not be read (pyinfra then fails that host alone, and the deploys skip it)."""
        return None


class UserFileContents(FactBase[list[str] | None]):
    """The lines of ``path``, read as ``user`` (a link the user planted cannot make root read another file); None: none.

    Read only for ``--diff``.

    .. code:: python

        ['namespace = "default"', 'address = "/run/user/1001/containerd/containerd.sock"']  # None: no such file
    """

    missing = "pyinfra-nerdctl: no such file"

    def command(self, user: str, path: str) -> str:
        return f"runuser -u {shlex.quote(user)} -- cat -- {shlex.quote(path)} 2>/dev/null || echo {shlex.quote(self.missing)}"

    def process(self, output: list[str]) -> list[str] | None:
        return None if output == [self.missing] else output
