"""Example inventory: k3s nodes, whose containerd lives under /run/k3s with namespace k8s.io.

nerdctl, BuildKit and the kubelet then share one image store: what ``nerdctl build``
produces is visible to Kubernetes without a push. Name the nodes in K3S_NODES.
"""

import os

_names = [name for name in os.environ.get("K3S_NODES", "k3s-1.example.internal").split(",") if name]

k3s_nodes = (
    _names,
    {
        "ssh_user": "root",
        "containerd_address": "unix:///run/k3s/containerd/containerd.sock",
        "containerd_namespace": "k8s.io",
        "nerdctl_docker_alias": True,
    },
)
