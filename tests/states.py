"""``BuildHostState`` values for unit tests of the planning, without a host."""

from __future__ import annotations

from pyinfra_nerdctl.deploys.changes import managed_dirs, managed_files
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL


def converged_state(settings, releases=(NERDCTL, BUILDKIT)) -> dict:
    """The BuildHostState of a host on which ``settings`` are fully applied: our files, buildkitd running."""
    paths = {
        d: {"kind": "dir", "mode": "755", "user": "root", "group": "root", "sha256": None, "ours": False}
        for d in managed_dirs(settings, releases)
    }
    for file in managed_files(settings, releases):
        paths[file.path] = {
            "kind": "file",
            "mode": file.mode,
            "user": "root",
            "group": "root",
            "sha256": file.sha256,
            "ours": True,
        }
    unit = {"enabled": True, "active": True, "needs_daemon_reload": False, "stale": False}
    absent = {"enabled": False, "active": False, "needs_daemon_reload": False, "stale": False}
    return {
        "machine": "x86_64",
        "systemd": True,
        "nerdctl": settings.nerdctl_version,
        "buildkit": {"buildkitd": settings.buildkit_version, "buildctl": settings.buildkit_version},
        "paths": paths,
        "created_dirs": {},
        "group_exists": True,
        "units": {"socket": dict(unit), "service": {**unit, "enabled": False}, "containerd": dict(absent)},
        "full": {"version": None, "components": {}, "managed": False},
    }
