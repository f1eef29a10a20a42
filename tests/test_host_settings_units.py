"""Hosts unlike the test image (issues 13 and 15), without a host: locales, old systemd, odd names, folders."""

from __future__ import annotations

import inspect
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pyinfra.api import FactBase
from pyinfra_nerdctl import facts
from pyinfra_nerdctl.deploys.changes import plan_changes
from pyinfra_nerdctl.deploys.operations import DROP_FUNCTIONS
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL
from pyinfra_nerdctl.deploys.settings import resolve_settings
from pyinfra_nerdctl.facts import (
    BuildHostState,
    BuildkitSocket,
    ContainerdSocket,
    parse_systemd_timestamp,
    parse_unit_freshness,
    shell_glob,
    started_before,
)
from pyinfra_nerdctl.facts.units import FactProcessError  # pyinfra's, or its FactError before 3.6


def _fact_classes() -> list[type[FactBase]]:
    return [
        value
        for value in vars(facts).values()
        if inspect.isclass(value) and issubclass(value, FactBase) and value.__module__.startswith(facts.__name__)
    ]


def _command(fact: type[FactBase]) -> str:
    command = fact.command
    if not callable(command):
        return command
    required = [
        name
        for name, parameter in inspect.signature(command).parameters.items()
        if parameter.default is inspect.Parameter.empty and name != "self"
    ]
    return fact().command(*["/var/lib/pyinfra-nerdctl/x@y.files" for _ in required])


def test_every_fact_command_runs_in_the_c_locale():
    classes = _fact_classes()
    assert len(classes) >= 11 and facts.RootlessState in classes
    for fact in classes:
        assert _command(fact).startswith("export LC_ALL=C; "), fact.__name__


# Captured on a Debian 12 host with LANG=de_DE.UTF-8 (tests/testhosts.py BOOKWORM_GERMAN) from the
# state fact's stat as it was (%F): the words stat translates, which no parser took for a folder or a file.
GERMAN_STAT_BEFORE = [
    "path=/etc/nerdctl|Verzeichnis|755|root|root",
    "path=/etc/buildkit|Verzeichnis|755|root|root",
    "path=/etc/nerdctl/nerdctl.toml|reguläre Datei|644|root|root",
    "path=/etc/buildkit/buildkitd.toml|reguläre Datei|644|root|root",
    "path=/etc/systemd/system/buildkit.socket|reguläre Datei|644|root|root",
    "path=/etc/systemd/system/buildkit.service|reguläre Datei|644|root|root",
]
# The same host, the same moment: the facts' commands as they are, without their LC_ALL=C, so in the
# host's locale. With LC_ALL=C they printed exactly the same lines.
GERMAN_BUILD_HOST_STATE = [
    "machine=x86_64",
    "systemd=yes",
    "nerdctl version 2.4.0",
    "buildkitd github.com/moby/buildkit v0.12.5 8e31c1e61c94ad5373f553142f60e6323d4143db",
    "buildctl github.com/moby/buildkit v0.12.5 8e31c1e61c94ad5373f553142f60e6323d4143db",
    "path=/etc/nerdctl|41ed|755|root|root",
    "path=/etc/buildkit|41ed|755|root|root",
    "path=/etc/nerdctl/nerdctl.toml|81a4|644|root|root",
    "path=/etc/buildkit/buildkitd.toml|81a4|644|root|root",
    "path=/etc/systemd/system/buildkit.socket|81a4|644|root|root",
    "path=/etc/systemd/system/buildkit.service|81a4|644|root|root",
    "ea3b8f39632f3c3be947f5095ee54efc37800aa523e3c29c8b599fd7196516a3  /etc/nerdctl/nerdctl.toml",
    "672b8f3f79dbb0d59039aa1df5f6ece8259a338a592476d34808a75aee798150  /etc/buildkit/buildkitd.toml",
    "2e4172552e14f51ec73774297d3654655a1e8bdd0c0a781557bec433b7ac807e  /etc/systemd/system/buildkit.socket",
    "9a7709839e016bd6703a3431b338a527d5f50ba15b6022eaaf0ce53ef2099cb7  /etc/systemd/system/buildkit.service",
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
    "unit.NeedDaemonReload=no",
    "ctime.socket=2026-11-29 23:50:17.730079687 +0000",
    "ctime.service=2026-11-29 23:50:16.930437262 +0000",
    "ctime.service=2026-11-29 23:50:17.610079683 +0000",
    "ctime.service=2026-11-29 23:50:17.842079691 +0000",
    "group=yes",
]
GERMAN_BUILDKIT_SOCKET = [
    "Listen=/run/buildkit/buildkitd.sock (Stream)",
    "ActiveState=active",
    "UnitFileState=enabled",
    "stat=c1b0|660|root|builders",
]
GERMAN_CONTAINERD_SOCKET = [
    "path=/run/containerd/containerd.sock",
    "stat=c1ed|755|root|root",
]
ENGLISH_BUILD_HOST_STATE = [
    "machine=x86_64",
    "systemd=yes",
    "nerdctl version 2.4.0",
    "buildkitd github.com/moby/buildkit v0.12.5 8e31c1e61c94ad5373f553142f60e6323d4143db",
    "buildctl github.com/moby/buildkit v0.12.5 8e31c1e61c94ad5373f553142f60e6323d4143db",
    "path=/etc/nerdctl|41ed|755|root|root",
    "path=/etc/buildkit|41ed|755|root|root",
    "path=/etc/nerdctl/nerdctl.toml|81a4|644|root|root",
    "path=/etc/buildkit/buildkitd.toml|81a4|644|root|root",
    "path=/etc/systemd/system/buildkit.socket|81a4|644|root|root",
    "path=/etc/systemd/system/buildkit.service|81a4|644|root|root",
    "ea3b8f39632f3c3be947f5095ee54efc37800aa523e3c29c8b599fd7196516a3  /etc/nerdctl/nerdctl.toml",
    "672b8f3f79dbb0d59039aa1df5f6ece8259a338a592476d34808a75aee798150  /etc/buildkit/buildkitd.toml",
    "2e4172552e14f51ec73774297d3654655a1e8bdd0c0a781557bec433b7ac807e  /etc/systemd/system/buildkit.socket",
    "9a7709839e016bd6703a3431b338a527d5f50ba15b6022eaaf0ce53ef2099cb7  /etc/systemd/system/buildkit.service",
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
    "unit.NeedDaemonReload=no",
    "ctime.socket=2026-11-29 23:50:17.730079687 +0000",
    "ctime.service=2026-11-29 23:50:16.930437262 +0000",
    "ctime.service=2026-11-29 23:50:17.610079683 +0000",
    "ctime.service=2026-11-29 23:50:17.842079691 +0000",
    "group=yes",
]


def test_german_output_parses_as_english_output_does():
    state = BuildHostState().process(GERMAN_BUILD_HOST_STATE)
    assert state == BuildHostState().process(ENGLISH_BUILD_HOST_STATE)
    assert {path: found["kind"] for path, found in state["paths"].items()} == {
        "/etc/nerdctl": "dir",
        "/etc/buildkit": "dir",
        "/etc/nerdctl/nerdctl.toml": "file",
        "/etc/buildkit/buildkitd.toml": "file",
        "/etc/systemd/system/buildkit.socket": "file",
        "/etc/systemd/system/buildkit.service": "file",
    }
    assert state["units"]["socket"] == {"enabled": True, "active": True, "needs_daemon_reload": False, "stale": False}
    assert state["units"]["service"]["stale"] is False
    assert BuildkitSocket().process(GERMAN_BUILDKIT_SOCKET)["is_socket"] is True
    assert ContainerdSocket().process(GERMAN_CONTAINERD_SOCKET)["is_socket"] is True


def test_stat_asks_for_output_no_locale_translates():
    assert "Verzeichnis" in GERMAN_STAT_BEFORE[0]  # what %F gave
    commands = (
        BuildHostState().command(paths=("/etc/nerdctl",)),
        ContainerdSocket().command(),
        BuildkitSocket().command(),
    )
    for command in commands:
        assert "%F" not in command and "%f" in command
    assert facts.file_kind("a1ff") == "symlink" and facts.file_kind("2190") == "other"  # a character device


def test_german_systemd_timestamps_parse_like_english_ones():
    english = ["unit.ActiveState=active", "unit.ActiveEnterTimestamp=Sun 2026-11-29 18:01:02 UTC"]
    german = ["unit.ActiveState=active", "unit.ActiveEnterTimestamp=So 2026-11-29 18:01:02 UTC"]
    ctime = ["ctime.socket=2026-11-29 18:01:03.100000000 +0000"]
    assert parse_unit_freshness(german + ctime) == parse_unit_freshness(english + ctime)
    assert parse_unit_freshness(german + ctime)["socket"]["stale"] is True


def test_whole_second_timestamps_count_a_unit_started_in_the_same_second_as_fresh():
    changed = datetime(2026, 11, 29, 18, 1, 2, 700000, timezone.utc)
    # systemd 247 prints the start of a unit started at 18:01:02.900 as 18:01:02.
    assert started_before("Sun 2026-11-29 18:01:02 UTC", changed) is False
    assert started_before("Sun 2026-11-29 18:01:01 UTC", changed) is True
    # With microseconds, exactly.
    assert started_before("Sun 2026-11-29 18:01:02.600000 UTC", changed) is True
    assert started_before("Sun 2026-11-29 18:01:02.800000 UTC", changed) is False
    assert started_before("", changed) is False and started_before("Sun 2026-11-29 18:01:01 UTC", None) is False


@pytest.mark.parametrize("value", ["yesterday", "Sun 29.11.2026 18:01", "Sun"])
def test_unexpected_timestamps_are_fact_errors(value):
    with pytest.raises(FactProcessError, match="unexpected systemd timestamp"):
        parse_systemd_timestamp(value)
    with pytest.raises(FactProcessError):
        BuildHostState().process(["unit.ActiveState=active", f"unit.ActiveEnterTimestamp={value}"])
    with pytest.raises(FactProcessError, match="unexpected stat change time"):
        BuildHostState().process(["ctime.socket=gestern"])


def test_glob_arguments_are_quoted_but_still_expand(tmp_path):
    (tmp_path / "a b").mkdir()
    for name in ("x@1.files", "x@2.files", "y@1.files"):
        (tmp_path / "a b" / name).write_text("")
    pattern = shell_glob(f"{tmp_path}/a b/x@*.files")
    listed = subprocess.run(
        ["sh", "-c", f'for f in {pattern}; do echo "$f"; done'], capture_output=True, text=True, check=True
    )
    assert listed.stdout.splitlines() == [f"{tmp_path}/a b/x@1.files", f"{tmp_path}/a b/x@2.files"]
    assert shell_glob("/var/lib/$(reboot)/*") == "'/var/lib/$(reboot)/'*"


def _drop(tmp_path: Path, script: str) -> None:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    variables = f"state='{state}'\nfolders='{state}/created-folders'\n"
    subprocess.run(["sh", "-euc", variables + DROP_FUNCTIONS + script], check=True, cwd=tmp_path)


def test_removal_takes_only_folders_it_made_and_reads_names_whole(tmp_path):
    srv = tmp_path / "srv"  # an empty folder the distribution ships
    ours = srv / "tools" / "odd dir"
    ours.mkdir(parents=True)
    names = ["read me *.txt", "*", "plain"]
    for name in names:
        (ours / name).write_text("x")
    (tmp_path / "read").write_text("kept")  # what `read me *.txt` would hit, word-split
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "created-folders").write_text(f"{srv / 'tools'}\n{ours}\n")
    listing = tmp_path / "list"
    listing.write_text("".join(f"{ours / name}\n" for name in names))

    _drop(tmp_path, f"drop_listed '{listing}'")

    assert not (srv / "tools").exists() and srv.is_dir()
    assert (tmp_path / "read").read_text() == "kept"
    assert (tmp_path / "state" / "created-folders").read_text() == ""
    assert oct((tmp_path / "state" / "created-folders").stat().st_mode & 0o777) == "0o644"


def test_a_folder_not_made_by_the_install_stays_even_when_empty(tmp_path):
    folder = tmp_path / "opt" / "tools"
    folder.mkdir(parents=True)
    (folder / "nerdctl").write_text("x")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "created-folders").write_text(f"{tmp_path / 'elsewhere'}\n")

    _drop(tmp_path, f"drop '{folder / 'nerdctl'}'")

    assert folder.is_dir() and not (folder / "nerdctl").exists()


def test_a_created_folder_whose_mode_or_owner_went_wrong_is_repaired():
    settings = resolve_settings({}.get, {"bin_dir": "/opt/tools/bin"})
    lines = [
        "folder=/opt/tools|41c0|700|root|root",
        "folder=/opt/tools/bin|41ed|755|root|root",
        "folder=/opt/tools/lib|41ed|755|root|staff",
    ]
    state = {**BuildHostState().process([]), "created_dirs": BuildHostState().process(lines)["created_dirs"]}
    changes = plan_changes(settings, state, (NERDCTL, BUILDKIT))
    assert changes.created_dirs_to_fix == ("/opt/tools", "/opt/tools/lib")
