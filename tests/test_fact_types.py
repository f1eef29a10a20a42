"""Every fact returns what its declared payload type (``facts/types.py``) says, and its docstring's example agrees.

The planners are type-checked against those types (``.ci/typecheck``); these tests hold the facts'
real output, on captured host output, to the same types, key for key and value for value, so
neither the types nor the docstrings can drift from what ``process()`` returns.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import types
import typing
from typing import Any, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
from pyinfra.api import FactBase
from pyinfra_nerdctl import facts
from pyinfra_nerdctl.facts.rootless import UserFileContents

SHA = "ea3b8f39632f3c3be947f5095ee54efc37800aa523e3c29c8b599fd7196516a3"
UNIT_LINES = [
    "unit.ActiveState=active",
    "unit.UnitFileState=enabled",
    "unit.ActiveEnterTimestamp=Sun 2026-11-29 23:50:18.592992 UTC",
    "unit.NeedDaemonReload=no",
    "unit.",
    "unit.ActiveState=active",
    "unit.UnitFileState=static",
    "unit.ActiveEnterTimestamp=Sun 2026-11-29 23:50:21.173335 UTC",
    "unit.NeedDaemonReload=no",
    "unit.",
    "unit.ActiveState=inactive",
    "unit.UnitFileState=",
    "unit.ActiveEnterTimestamp=",
    "unit.NeedDaemonReload=yes",
    "ctime.socket=2026-11-29 23:50:17.730079687 +0000",
    "ctime.service=2026-11-29 23:50:19.930437262 +0000",
]
VERSION_LINES = [
    "nerdctl version 2.3.5",
    "buildkitd github.com/moby/buildkit v0.12.5 8e31c1e61c94ad5373f553142f60e6323d4143db",
    "buildctl github.com/moby/buildkit v0.12.5 8e31c1e61c94ad5373f553142f60e6323d4143db",
]
FULL_LINES = ["full.nerdctl=2.3.5", "full.containerd=2.1.4", "full.buildkit=0.12.5"]
# Captured output of each fact's command on a host (every key filled: lists and maps not empty).
CAPTURED: dict[str, tuple[type[FactBase[Any]], list[str]]] = {
    "BuildHostPlatform": (facts.BuildHostPlatform, ["machine=aarch64", "systemd=yes"]),
    "BuildHostState": (
        facts.BuildHostState,
        [
            "machine=x86_64",
            "systemd=yes",
            *FULL_LINES,
            "full_managed=yes",
            *VERSION_LINES,
            "executed=/usr/local/bin/buildkitd",
            "path=/etc/nerdctl|41ed|755|root|root",
            "path=/etc/nerdctl/nerdctl.toml|81a4|644|root|root",
            f"{SHA}  /etc/nerdctl/nerdctl.toml",
            "marked=/etc/nerdctl/nerdctl.toml",
            "folder=/opt/my tools|41ed|755|root|root",
            *UNIT_LINES,
            "foreign.line=/etc/systemd/system/buildkitd.service:ExecStart=/usr/local/bin/buildkitd",
            "foreign.process=812|buildkitd.service|/usr/local/bin/buildkitd --oci-worker=false",
            "foreign.process=950||/usr/local/bin/buildkitd --addr unix:///run/mine.sock",
            "foreign.unit.Id=buildkitd.service",
            "foreign.unit.FragmentPath=/etc/systemd/system/buildkitd.service",
            "foreign.unit.UnitFileState=enabled",
            "foreign.unit.ActiveState=active",
            "foreign.unit.MainPID=812",
            "leftover=/var/lib/pyinfra-nerdctl/uploads/3f1e9a.5c2b",
            "tls_cert=-----BEGIN CERTIFICATE-----",
            "tls_cert=MIIBszCCAVmgAwIBAgIU",
            "tls_cert=-----END CERTIFICATE-----",
            "group=yes",
            "k3s_registries=bWlycm9yczoKICBkb2NrZXIuaW86CiAgICBlbmRwb2ludDogWyJodHRwOi8vMTI3LjAuMC4xOjUwMDAiXQo=",
            "k3s_certs_d=yes",
            "k3s_hosts_toml=Z2hjci5pbw== W2hvc3QuImh0dHA6Ly8xMC4wLjAuNTo1MDAwIl0KICBjYXBhYmlsaXRpZXMgPSBbInB1bGwiLCAicmVzb2x2ZSJdCg==",
        ],
    ),
    "BuildkitBuilds": (facts.BuildkitBuilds, ["build=qz1k0dxm6c7t2m2vw5ofm7l0a 2026-11-30T19:02:03Z"]),
    "BuildkitDiskUsage": (
        facts.BuildkitDiskUsage,
        [
            "fs.path=/var/lib/buildkit",
            "fs.blocks=4096 1542756 1484652 1484652",
            "du.answered",
            "du=0 false false source.local",
            "du=4096 false false source.local",
            "du=4204 false true regular",
            "du=3129478 false true regular",
        ],
    ),
    "BuildkitSocket": (
        facts.BuildkitSocket,
        [
            "Listen=/run/buildkit/buildkitd.sock (Stream)",
            "ActiveState=active",
            "UnitFileState=enabled",
            "stat=c1b0|660|root|builders",
        ],
    ),
    "ContainerdSocket": (facts.ContainerdSocket, ["path=/run/containerd/containerd.sock", "stat=c1ed|755|root|root"]),
    "BuildkitUnitFreshness": (facts.BuildkitUnitFreshness, UNIT_LINES),
    "BuildkitWorkers": (
        facts.BuildkitWorkers,
        [
            "ID:\tqz1abc",
            "Platforms:\tlinux/amd64,linux/386",
            "Labels:",
            "\torg.mobyproject.buildkit.worker.executor:\tcontainerd",
            "\torg.mobyproject.buildkit.worker.containerd.namespace:\tk8s.io",
        ],
    ),
    "NerdctlVersion": (facts.NerdctlVersion, VERSION_LINES[:1]),
    "BuildkitVersion": (facts.BuildkitVersion, VERSION_LINES[1:]),
    "ReleaseFiles": (facts.ReleaseFiles, ["/usr/local/bin/buildctl", "/usr/local/bin/buildkitd"]),
    "NerdctlFull": (facts.NerdctlFull, [*FULL_LINES, "containerd=active"]),
    "RootlessState": (
        facts.RootlessState,
        [
            "machine=x86_64",
            "systemd=yes",
            "user=alice",
            "namespace=default",
            "passwd=alice:x:1001:1001::/home/alice:/bin/bash",
            "linger=yes",
            "linger_ours=yes",
            "subids_ours=165536-231071",
            "subuid=operator1:100000:65536",
            "subuid=alice:165536:65536",
            "subgid=alice:165536:65536",
            "max_user_namespaces=0",
            "unprivileged_userns_clone=",
            "program.rootlesskit=/usr/bin/rootlesskit",
            "installed.nerdctl=yes",
            "user_dbus=yes",
            "home_exists=yes",
            "path=.config/nerdctl/nerdctl.toml|81a4|644|alice|alice",
            f"{SHA}  .config/nerdctl/nerdctl.toml",
            "data=.local/share/containerd",
            "good_copies=yes",
            "socket_stat=c180|600|alice",
            "manager=yes",
            *UNIT_LINES,
            "unit.Listen=/run/user/1001/buildkit-default/buildkitd.sock (Stream)",
        ],
    ),
    "UserFileContents": (UserFileContents, ['namespace = "default"', ""]),
}


def payload_type(fact: type[FactBase[Any]]) -> Any:
    """The ``T`` of ``FactBase[T]`` that ``fact`` declares."""
    (base,) = (base for base in fact.__orig_bases__ if get_origin(base) is FactBase)
    return get_args(base)[0]


def mismatches(value: Any, expected: Any, where: str = "", open_dicts: bool = False) -> list[str]:
    """Where ``value`` is not of type ``expected``: a TypedDict's keys exactly, and every value's type.

    With ``open_dicts`` (docstring examples), a dict with a ``"..."`` key may leave keys out.
    """
    origin = get_origin(expected)
    if origin in (Union, types.UnionType):
        # A value that is not None is held to the other options (their mismatches say more).
        kinds = [option for option in get_args(expected) if value is None or option is not type(None)]
        options = [mismatches(value, option, where, open_dicts) for option in kinds]
        return [] if any(not found for found in options) else min(options, key=len)
    if expected is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    if expected is typing.Any:
        return []
    if is_typeddict(expected):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a dict"]
        hints = get_type_hints(expected)
        keys = set(value) - {"..."}
        problems = [f"{where}: unknown key {key!r}" for key in sorted(keys - set(hints))]
        if not (open_dicts and "..." in value):
            problems += [f"{where}: missing key {key!r}" for key in sorted(set(hints) - keys)]
        for key in sorted(keys & set(hints)):
            problems += mismatches(value[key], hints[key], f"{where}[{key!r}]", open_dicts)
        return problems
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not a dict"]
        key_type, value_type = get_args(expected)
        problems = []
        for key, item in value.items():
            if key == "..." and open_dicts:
                continue
            problems += mismatches(key, key_type, f"{where} key", open_dicts)
            problems += mismatches(item, value_type, f"{where}[{key!r}]", open_dicts)
        return problems
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        (item_type,) = get_args(expected)
        return [p for index, item in enumerate(value) for p in mismatches(item, item_type, f"{where}[{index}]")]
    if origin is tuple and get_args(expected)[1:] == (...,):
        if not isinstance(value, tuple):
            return [f"{where}: {value!r} is not a tuple"]
        item_type = get_args(expected)[0]
        return [p for index, item in enumerate(value) for p in mismatches(item, item_type, f"{where}[{index}]")]
    if origin is tuple:
        item_types = get_args(expected)
        if not isinstance(value, tuple) or len(value) != len(item_types):
            return [f"{where}: {value!r} is not a {len(item_types)}-tuple"]
        return [
            p for item, item_type in zip(value, item_types, strict=True) for p in mismatches(item, item_type, where)
        ]
    if expected is int and isinstance(value, bool):
        return [f"{where}: {value!r} is a bool, not an int"]
    return [] if isinstance(value, expected) else [f"{where}: {value!r} is not a {expected.__name__}"]


def docstring_example(fact: type[FactBase[Any]]) -> Any:
    """The value of the ``.. code:: python`` block of a fact's docstring; ``...`` in a dict as a ``"..."`` key."""
    block = (fact.__doc__ or "").split(".. code:: python", 1)[1]
    text = re.sub(r"([{,]\s*)\.\.\.(\s*[,}])", r'\1"...": None\2', block)
    return ast.literal_eval(text.strip())


# Every fact the package defines, exported from ``facts`` or not.
FACT_MODULES = [
    importlib.import_module(f"{facts.__name__}.{module.name}") for module in pkgutil.iter_modules(facts.__path__)
]
ALL_FACTS = sorted(
    {
        value
        for module in FACT_MODULES
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, FactBase) and value.__module__ == module.__name__
    },
    key=lambda fact: fact.__name__,
)


def test_every_fact_has_a_captured_example_and_a_typed_payload() -> None:
    assert sorted(CAPTURED) == [fact.__name__ for fact in ALL_FACTS]
    for fact in ALL_FACTS:
        declared = payload_type(fact)
        assert declared not in (dict, list, Any), f"{fact.__name__} declares an untyped payload {declared}"


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_process_returns_the_declared_type(name: str) -> None:
    fact, lines = CAPTURED[name]
    declared = payload_type(fact)
    assert mismatches(fact().process(lines), declared, name) == []
    assert mismatches(fact().process([]), declared, f"{name} of no output") == []
    assert mismatches(fact.default(), declared, f"{name}.default()") == []


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_docstring_example_has_the_declared_keys(name: str) -> None:
    fact, _ = CAPTURED[name]
    assert mismatches(docstring_example(fact), payload_type(fact), f"{name} docstring", open_dicts=True) == []


def test_mismatches_names_a_missing_key_an_unknown_key_and_a_wrong_type() -> None:
    state = facts.BuildHostState().process(CAPTURED["BuildHostState"][1])
    del state["full"]["managed"]
    state["units"]["socket"]["stale"] = "no"
    state["extra"] = 1
    assert mismatches(state, payload_type(facts.BuildHostState), "state") == [
        "state: unknown key 'extra'",
        "state['full']: missing key 'managed'",
        "state['units']['socket']['stale']: 'no' is not a bool",
    ]
