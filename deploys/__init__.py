"""pyinfra deploys for a containerd build host; see the README for every setting.

From the CLI: ``pyinfra INVENTORY pyinfra_nerdctl.deploys.install_build_host``; a user's
rootless BuildKit: ``pyinfra INVENTORY pyinfra_nerdctl.deploys.install_rootless rootless_user=alice``;
BuildKit's cache pruned: ``pyinfra INVENTORY pyinfra_nerdctl.deploys.prune_buildkit all=true``.
"""

from .build_host import (
    install_build_host,
    install_buildkit,
    install_nerdctl,
    remove_build_host,
    remove_buildkit,
    remove_nerdctl,
)
from .prune import prune_buildkit
from .rootless import install_rootless, remove_rootless

__all__ = [
    "install_build_host",
    "install_buildkit",
    "install_nerdctl",
    "install_rootless",
    "prune_buildkit",
    "remove_build_host",
    "remove_buildkit",
    "remove_nerdctl",
    "remove_rootless",
]
