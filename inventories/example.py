"""Example inventory: build hosts running a plain containerd.

Name your hosts in BUILD_HOSTS (comma separated, e.g. ``BUILD_HOSTS=build-1,build-2``)
or edit the list below. The dict is group data that every host shares; any key
may also be set per host or with ``--data``. The README lists every setting.
"""

import os

_names = [name for name in os.environ.get("BUILD_HOSTS", "build-1.example.internal").split(",") if name]

hosts = (
    _names,
    {
        "ssh_user": "root",
        "containerd_namespace": "default",
        "buildkit_socket_group": "buildkit",
    },
)
