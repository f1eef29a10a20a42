"""Warnings before a run about what fills a build host's disk, from the settings and the BuildKit version.

What they say was read in upstream's source (moby/buildkit ``cmd/buildkitd/config``, ``cache/manager.go``):

- ``gc = false`` on the worker: no garbage collection at all.
- BuildKit 0.17 replaced ``keepBytes`` (a gcpolicy's) and ``gckeepstorage`` (the worker's) by
  ``reservedSpace``, ``maxUsedSpace`` and ``minFreeSpace``, and reads the old keys as
  ``reservedSpace``: the size the collector never prunes below. Alone, that still prunes down to it;
  beside ``minFreeSpace`` (from 0.21 on) it is a floor only, and the cap is ``maxUsedSpace``.
  Before 0.17 the new keys do not exist, and buildkitd ignores unknown keys silently.
- In containerd's ``k8s.io`` namespace the kubelet's image garbage collection deletes images no
  container uses once the disk passes ``imageGCHighThresholdPercent`` (85 by default), built ones too;
  it skips images the CRI reports pinned (containerd 1.7 and newer pin an image labelled
  ``io.cri-containerd.pinned=pinned``; kubelets from Kubernetes 1.29, and 1.25 to 1.28 patch
  releases since September 2023, honour it: kubernetes/kubernetes#119986).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from packaging.version import InvalidVersion, Version

from .settings import Settings

NEW_GC_KEYS = ("reservedSpace", "maxUsedSpace", "minFreeSpace")
NEW_GC_SINCE = Version("0.17.0")
# The old key of each place the sizes go: a gcpolicy's, and the worker's (its default policies').
OLD_KEY = {"gcpolicy": "keepBytes", "worker": "gckeepstorage"}
KUBELET_NAMESPACE = "k8s.io"


def gc_places(worker: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Each place of ``[worker.containerd]`` that holds GC sizes: (kind, its name in TOML, its keys)."""
    yield "worker", "worker.containerd", worker
    for index, policy in enumerate(worker.get("gcpolicy") or []):
        yield "gcpolicy", f"worker.containerd.gcpolicy[{index}]", policy


def _version(buildkit_version: str | None) -> Version | None:
    try:
        return Version(buildkit_version or "")
    except InvalidVersion:
        return None


def gc_warnings(settings: Settings, buildkit_version: str | None) -> list[str]:
    """What ``buildkitd_config``'s GC keys do on ``buildkit_version`` that an operator may not expect.

    ``buildkit_version``: the BuildKit that reads the config after this run; None when not known
    (then it is taken for a current one, 0.17 or newer).
    """
    worker = settings.buildkitd_config.get("worker", {}).get("containerd", {})
    version = _version(buildkit_version)
    warnings = []
    if worker.get("gc") is False:
        warnings.append(
            "buildkitd_config turns BuildKit's garbage collection off (worker.containerd.gc = false): its cache "
            "grows until the disk is full; prune it with prune_buildkit, or turn gc on with a maxUsedSpace"
        )
    for kind, where, keys in gc_places(worker):
        if version is not None and version < NEW_GC_SINCE:
            warnings += [
                f"buildkitd_config: BuildKit {version} does not know {where}.{key} (it came in 0.17) and "
                f"ignores it silently: use {OLD_KEY[kind]}"
                for key in NEW_GC_KEYS
                if key in keys
            ]
            continue
        floor = next((key for key in (OLD_KEY[kind], "reservedSpace") if key in keys), None)
        if floor and "maxUsedSpace" not in keys:
            warnings.append(
                f"buildkitd_config: {where} sets {floor} without maxUsedSpace: BuildKit 0.17 and newer read it as "
                "reservedSpace, the size the garbage collector never prunes below, which caps the cache only "
                "while no minFreeSpace is set; set maxUsedSpace for the most the cache may use"
            )
    return warnings


def namespace_warnings(settings: Settings) -> list[str]:
    """The kubelet's image garbage collection, where BuildKit's images land in its namespace."""
    if settings.containerd_namespace != KUBELET_NAMESPACE:
        return []
    return [
        f"containerd_namespace={KUBELET_NAMESPACE!r}: the kubelet's image garbage collection deletes images no "
        "container uses once the disk passes imageGCHighThresholdPercent (85% by default), built ones too; keep "
        f"an image by pinning it (ctr -n {KUBELET_NAMESPACE} images label IMAGE io.cri-containerd.pinned=pinned), "
        "pushing it to a registry, or raising the kubelet's image-gc-high-threshold (see docs/deploys.md)"
    ]


def disk_warnings(settings: Settings, buildkit_version: str | None) -> list[str]:
    """Every warning about the disk before a run (``gc_warnings``, ``namespace_warnings``).

    >>> from .settings import resolve_settings
    >>> disk_warnings(resolve_settings({}.get, {}), "0.32.2")
    []
    """
    return gc_warnings(settings, buildkit_version) + namespace_warnings(settings)


def version_after_run(settings: Settings, installed: str | None) -> str | None:
    """The BuildKit that reads ``buildkitd.toml`` after an install: the wanted release (minimal flavor), else
    the installed one (the full archive names its BuildKit only once unpacked)."""
    return installed if settings.full else settings.buildkit_version
