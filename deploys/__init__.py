"""pyinfra deploys for a containerd build host; see the README for every setting.

From the CLI: ``pyinfra INVENTORY pyinfra_nerdctl.deploys.install_build_host``.
"""

from .build_host import (
    install_build_host,
    install_buildkit,
    install_nerdctl,
    remove_build_host,
    remove_buildkit,
    remove_nerdctl,
)

__all__ = [
    "install_build_host",
    "install_buildkit",
    "install_nerdctl",
    "remove_build_host",
    "remove_buildkit",
    "remove_nerdctl",
]
