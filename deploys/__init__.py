"""pyinfra deploys for a containerd build host; see the README for every setting.

From the CLI: ``pyinfra INVENTORY pyinfra_nerdctl.deploys.install_build_host``; a user's
rootless BuildKit: ``pyinfra INVENTORY pyinfra_nerdctl.deploys.install_rootless rootless_user=alice``.
"""

from .build_host import (
    install_build_host,
    install_buildkit,
    install_nerdctl,
    remove_build_host,
    remove_buildkit,
    remove_nerdctl,
)
from .rootless import install_rootless, remove_rootless

__all__ = [
    "install_build_host",
    "install_buildkit",
    "install_nerdctl",
    "install_rootless",
    "remove_build_host",
    "remove_buildkit",
    "remove_nerdctl",
    "remove_rootless",
]
