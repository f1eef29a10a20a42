"""Where pyinfra-nerdctl puts things on a host: every path and unit name has its home here.

The facts read these paths and the deploys write them, so both import them from here.
"""

from __future__ import annotations

DEFAULT_BIN_DIR = "/usr/local/bin"
DEFAULT_FULL_PREFIX = "/usr/local"
STATE_DIR = "/var/lib/pyinfra-nerdctl"
# Folders the install made (one absolute path a line): removal takes these, once empty, and no others.
CREATED_FOLDERS = f"{STATE_DIR}/created-folders"
# The `--version` line of each installed binary, keyed by what proves the file unchanged (one
# PATH|KEY|LINE a line): the version facts read it instead of executing a binary whose key still matches.
BINARY_VERSIONS = f"{STATE_DIR}/binary-versions"
BUILDKIT_STATE = "/var/lib/buildkit"
BUILDKIT_GOOD_DIR = f"{STATE_DIR}/buildkit-good"  # copies of the last BuildKit setup that answered
WORK_DIR = f"{STATE_DIR}/work"  # the install's scratch folders, one per run
UPLOAD_DIR = f"{STATE_DIR}/uploads"  # archives and files the controller uploads, one name per run
# Beside a run's (first) upload until its last command there, when the run found the host without root's
# folders (deploys/commands.py claim_uploads): while one is there, a failing run takes the folders back.
FRESH_HOST_MARK = "{upload}.fresh-host"
# The host's lock (deploys/commands.py lock_commands): in /run, where only root writes, and not in
# STATE_DIR, which a run that failed on a fresh host takes away again while the next run waits on its lock.
LOCK_FILE = "/run/pyinfra-nerdctl.lock"
TEMP_PREFIX = ".pyinfra-nerdctl"  # the install's unpack folder inside its destination, and temporary files
# Untouched this long, a run's scratch file is a killed run's: longer than any upload waits for the host's lock.
STALE_MINUTES = 60
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"  # containerd's own default
BUILDKIT_SOCKET = "/run/buildkit/buildkitd.sock"
BUILDKIT_ADDRESS = f"unix://{BUILDKIT_SOCKET}"

UNIT_DIR = "/etc/systemd/system"
# systemd's search path for system units, most important first; /lib is /usr/lib on merged-/usr hosts.
UNIT_SEARCH_DIRS = (
    UNIT_DIR,
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
# systemd's own PATH for services: the units' PATH after their own bin folders.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SOCKET_UNIT = "buildkit.socket"
SERVICE_UNIT = "buildkit.service"
CONTAINERD_UNIT = "containerd.service"
# Each unit by the role the facts and deploys name it with, in the order the unit facts print them
# (a rootless user's units carry the same names).
UNITS = {"socket": SOCKET_UNIT, "service": SERVICE_UNIT, "containerd": CONTAINERD_UNIT}
SOCKET_PATH = f"{UNIT_DIR}/{SOCKET_UNIT}"
SERVICE_PATH = f"{UNIT_DIR}/{SERVICE_UNIT}"
CONTAINERD_UNIT_PATH = f"{UNIT_DIR}/{CONTAINERD_UNIT}"

NERDCTL_CONFIG_DIR = "/etc/nerdctl"
BUILDKIT_CONFIG_DIR = "/etc/buildkit"
CONTAINERD_CONFIG_DIR = "/etc/containerd"
NERDCTL_CONFIG = f"{NERDCTL_CONFIG_DIR}/nerdctl.toml"
BUILDKIT_CONFIG = f"{BUILDKIT_CONFIG_DIR}/buildkitd.toml"
CONTAINERD_CONFIG = f"{CONTAINERD_CONFIG_DIR}/config.toml"
DOCKER_ALIAS = "/etc/profile.d/nerdctl-docker-alias.sh"
# A remote builder's TLS files (buildkit_remote_address), in a root-only folder: the fleet CA's certificate,
# which client certificates must chain to, and this host's server certificate with its key in one file, so
# that the pair is replaced by one rename (buildkitd's --tlscert and --tlskey both name it).
BUILDKIT_TLS_DIR = f"{BUILDKIT_CONFIG_DIR}/tls"
TLS_CA = f"{BUILDKIT_TLS_DIR}/ca.pem"
TLS_SERVER = f"{BUILDKIT_TLS_DIR}/server.pem"
TLS_FILES = (TLS_CA, TLS_SERVER)
# k3s's registry configuration, and the containerd hosts.toml folders k3s (1.26.13 and later) writes from it.
K3S_REGISTRIES = "/etc/rancher/k3s/registries.yaml"
K3S_CERTS_DIR = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
# nerdctl's own hosts_dir when nerdctl.toml sets none (nerdctl docs/config.md).
NERDCTL_HOSTS_DIRS = ("/etc/containerd/certs.d", "/etc/docker/certs.d")
FULL_README = "share/doc/nerdctl-full/README.md"  # under full_prefix

# Rootless users: where the deploy records what it, not the operator, turned on for a user.
ROOTLESS_STATE_DIR = f"{STATE_DIR}/rootless"
LINGER_DIR = "/var/lib/systemd/linger"
SUBID_FILES = {"uid": "/etc/subuid", "gid": "/etc/subgid"}  # the subordinate ID ranges, by kind
USER_DBUS_SOCKET = "/usr/lib/systemd/user/dbus.socket"
# A user's runtime folder and BuildKit socket, where rootless nerdctl looks first for the namespace.
USER_RUNTIME_DIR = "/run/user/{uid}"
USER_BUILDKIT_SOCKET = f"{USER_RUNTIME_DIR}/buildkit-{{namespace}}/buildkitd.sock"

# Under a rootless user's home folder (paths relative to it): the user's own units and configs.
USER_UNIT_DIR = ".config/systemd/user"
USER_CONTAINERD_FILE = f"{USER_UNIT_DIR}/{CONTAINERD_UNIT}"
USER_SOCKET_FILE = f"{USER_UNIT_DIR}/{SOCKET_UNIT}"
USER_SERVICE_FILE = f"{USER_UNIT_DIR}/{SERVICE_UNIT}"
USER_UNIT_FILES = (USER_CONTAINERD_FILE, USER_SOCKET_FILE, USER_SERVICE_FILE)
USER_BUILDKIT_CONFIG = ".config/buildkit/buildkitd.toml"
USER_NERDCTL_CONFIG = ".config/nerdctl/nerdctl.toml"
USER_CONFIG_DIRS = (".config/buildkit", ".config/nerdctl", ".config/containerd")
# Copies of the user's last BuildKit setup that answered (see deploys/verify.py), kept by the user.
USER_DATA_DIR = ".local/share"
USER_GOOD_DIR = f"{USER_DATA_DIR}/pyinfra-nerdctl/buildkit-good"

# The first line of every file the deploys write: the proof that a file is ours to change or remove.
MARKER = "# Managed by pyinfra-nerdctl: local changes are overwritten."
