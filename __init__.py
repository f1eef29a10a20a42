"""pyinfra-nerdctl: pyinfra deploys and facts for a containerd build host.

Installs nerdctl and BuildKit from their upstream release archives, runs
``buildkitd`` socket-activated with the containerd worker, and points nerdctl at
the host's containerd. Deploys live in :mod:`pyinfra_nerdctl.deploys`, facts in
:mod:`pyinfra_nerdctl.facts`.
"""

__version__ = "0.1.0"
