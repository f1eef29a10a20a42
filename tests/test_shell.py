"""The shell that runs on hosts passes shellcheck: the .sh files, and the scripts and fact commands composed from them."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pyinfra_nerdctl.deploys import commands
from pyinfra_nerdctl.deploys.commands import leftovers_script, locked, naming_a_kill
from pyinfra_nerdctl.deploys.drain import drain_commands
from pyinfra_nerdctl.deploys.operations import install_script, remember_script, removal_script
from pyinfra_nerdctl.deploys.prune import prune_options, prune_step
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL, NERDCTL_FULL, resolve_download
from pyinfra_nerdctl.deploys.rootless_plan import user_check_body
from pyinfra_nerdctl.deploys.settings import resolve_rootless_settings, resolve_settings
from pyinfra_nerdctl.deploys.verify import verify_script
from pyinfra_nerdctl.facts import (
    BuildHostPlatform,
    BuildHostState,
    BuildkitDiskUsage,
    BuildkitSocket,
    BuildkitUnitFreshness,
    BuildkitVersion,
    ContainerdSocket,
    NerdctlFull,
    NerdctlVersion,
    ReleaseFiles,
)
from pyinfra_nerdctl.facts.builds import builds_command
from pyinfra_nerdctl.facts.rootless import UserFileContents, rootless_state_command

SHELL_FILES = sorted((Path(__file__).resolve().parent.parent / "deploys").glob("*.sh"))
SHA = "a" * 64


def _downloads():
    return [
        resolve_download(release, version, "amd64", "https://github.com", SHA, None)
        for release, version in ((NERDCTL, "2.3.5"), (BUILDKIT, "0.12.5"))
    ]


COMPOSED = {
    "install": lambda: install_script(_downloads(), "/opt/a b/bin", retired=[NERDCTL_FULL]),
    "install from uploads": lambda: install_script(_downloads(), "/usr/local/bin", run_token="0123abcd"),
    "removal": lambda: removal_script(NERDCTL, "/usr/local/bin"),
    "install, a kill named": lambda: naming_a_kill("true", "the install into /opt/a b/bin"),
    "leftovers": lambda: leftovers_script(["/var/lib/pyinfra-nerdctl/work/a b", "/usr/local/bin/.pyinfra-nerdctl.x"]),
    "record versions": lambda: remember_script(["/opt/a b/bin/buildkitd", "/usr/local/bin/nerdctl"]),
    "verify": lambda: verify_script(resolve_settings({}.get, {}), service_was_running=False),
    "drain": lambda: drain_commands("/opt/a b/buildctl", "/run/buildkit/buildkitd.sock", 600, "buildkit.service")[0],
    "drain as a user": lambda: drain_commands(
        "/usr/local/bin/buildctl",
        "unix:///run/user/1000/buildkit/buildkitd.sock",
        5,
        "buildkit.service",
        "systemctl --user -M alice@",
    )[0],
    "BuildkitBuilds": lambda: builds_command("/opt/a b", "unix:///run/buildkit/buildkitd.sock"),
    "prune": lambda: prune_step(
        resolve_settings({}.get, {"bin_dir": "/opt/buildkit/bin"}),
        prune_options(all=True, keep_duration="48h", keep_storage="10GB"),
        {"buildctl": "0.32.2", "buildkitd": "0.32.2"},
    ).commands[0],
    "BuildkitDiskUsage": lambda: BuildkitDiskUsage().command("/opt/a b", root="/srv/build kit"),
    "BuildHostState": lambda: BuildHostState().command("/usr/local/bin", ("/etc/a b", "/etc/nerdctl"), "builders"),
    "ReleaseFiles": lambda: ReleaseFiles().command("/var/lib/a b.files"),
    "BuildkitSocket": lambda: BuildkitSocket().command(),
    "ContainerdSocket": lambda: ContainerdSocket().command(),
    "NerdctlVersion": lambda: NerdctlVersion().command(),
    "BuildkitVersion": lambda: BuildkitVersion().command(),
    "BuildkitUnitFreshness": lambda: BuildkitUnitFreshness().command(),
    "NerdctlFull": lambda: NerdctlFull().command(),
    "BuildHostPlatform": lambda: BuildHostPlatform().command,
    "RootlessState": lambda: rootless_state_command("alice", "/usr/local/bin", "default", "/usr/local"),
    "UserFileContents": lambda: UserFileContents().command("alice", "/home/a b/.config/x.toml"),
    "locked step": lambda: locked(["systemctl daemon-reload", "rm -f '/a b'"], 600),
    "rootless verify (run as the user)": lambda: user_check_body(
        resolve_settings({}.get, {}),
        resolve_rootless_settings({}.get, {"rootless_user": "alice"}),
        {"home": "/home/a b", "uid": 1001, "units": {"buildkit.service": {"active": False}}},
    ),
}


# Every command builder of deploys/commands.py, with awkward arguments (spaces, quotes).
COMMANDS = {
    "groupadd": lambda: commands.groupadd("builders"),
    "systemctl": lambda: commands.systemctl("disable", "--now", "buildkit.socket"),
    "reset_failed": lambda: commands.reset_failed("buildkit.socket", "buildkit.service"),
    "stop_buildkitd_process": lambda: commands.stop_buildkitd_process(4242, 20),
    "private_temp_file": commands.private_temp_file,
    "remove_file": lambda: commands.remove_file("/etc/a b"),
    "remove_tree": lambda: commands.remove_tree("/var/lib/a b"),
    "remove_if_empty": lambda: commands.remove_if_empty("/etc/a b"),
    "root_directory": lambda: commands.root_directory("/etc/a b", "755"),
    "root_owned": lambda: commands.root_owned("/usr/local/a b", "755"),
    "replace_file": lambda: commands.replace_file("/etc/a b.tmp", "/etc/a b", "644"),
    "as_user": lambda: commands.as_user("alice", 1001, "echo \"it's\" > '/home/a b'"),
    "user_systemctl": lambda: commands.user_systemctl("alice", 1001, "enable containerd.service buildkit.socket"),
    "user_write": lambda: commands.user_write("/home/a b/.config/x", "/home/a b/.config/x.tmp"),
    "user_upload_write": lambda: commands.user_upload_write(
        "alice", 1001, "/var/lib/pyinfra-nerdctl/uploads/x", commands.user_write("/home/a/x", "/home/a/x.tmp"), 600
    ),
    "mark": lambda: commands.mark("alice", "subids", "165536-231071"),
    "unmark": lambda: commands.unmark("alice", "linger"),
    "add_subids": lambda: commands.add_subids("alice", "uid", "165536-231071"),
    "delete_subids": lambda: commands.delete_subids("alice", ["--del-subuids 1-2", "--del-subgids 1-2"]),
    "linger": lambda: commands.linger("alice", True),
    "remove_user_files": lambda: commands.remove_user_files(
        ["/home/a b/.config/x"], "/home/a b/.local/share/good", ["/home/a b/.config/nerdctl"]
    ),
    "purge_user_data": lambda: commands.as_user(
        "alice", 1001, commands.purge_user_data("/usr/bin/rootlesskit", ["/home/a b/.local/share/containerd"])
    ),
    "private_dirs_command": commands.private_dirs_command,
    "open_lock": commands.open_lock,
    "lock_commands": lambda: "\n".join(commands.lock_commands(600)),
    "locked": lambda: commands.locked(["true"], 600),
    "claim_uploads": lambda: commands.claim_uploads(["/var/lib/pyinfra-nerdctl/uploads/a b", "/x"], 600),
    "take_back_uploads": lambda: commands.take_back_uploads(["/var/lib/pyinfra-nerdctl/uploads/a b"], 600),
    "leftovers_script": lambda: commands.leftovers_script(["/a b"]),
    "naming_a_kill": lambda: commands.naming_a_kill("exit 3", "the install"),
}


def test_every_command_builder_is_checked():
    builders = {
        name
        for name, value in vars(commands).items()
        if inspect.isfunction(value) and value.__module__ == commands.__name__ and not name.startswith("_")
    }
    assert builders == set(COMMANDS)


def shellcheck(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed (.ci/run installs Debian's shellcheck)")
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    return subprocess.run(["shellcheck", "-s", "sh", *args], input=script, capture_output=True, text=True)


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda path: path.name)
def test_shell_files_pass_shellcheck(path):
    result = shellcheck(str(path))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", COMPOSED)
def test_composed_scripts_and_fact_commands_pass_shellcheck(name):
    result = shellcheck("-", script=COMPOSED[name]())
    assert result.returncode == 0, result.stdout


# A command run as the user is one word quoted by shlex for the user's shell, where its `$` expands:
# the inner commands are checked on their own (user_write, purge_user_data, ...).
QUOTED_FOR_THE_USER = {"user_upload_write"}


@pytest.mark.parametrize("name", COMMANDS)
def test_host_commands_pass_shellcheck(name):
    exclude = ("-e", "SC2016") if name in QUOTED_FOR_THE_USER else ()
    result = shellcheck(*exclude, "-", script=COMMANDS[name]() + "\n")
    assert result.returncode == 0, result.stdout
