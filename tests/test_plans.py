"""The deploys' plans of steps, for order and content, against fixture states (pure: no host)."""

from __future__ import annotations

import copy

import pytest
from pyinfra_nerdctl.certs import default_ca_dir
from pyinfra_nerdctl.deploys.build_plan import install_steps, removal_steps
from pyinfra_nerdctl.deploys.changes import plan_changes, plan_removal
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL, NERDCTL_FULL
from pyinfra_nerdctl.deploys.rootless_plan import (
    plan_rootless,
    plan_rootless_removal,
    rootless_steps,
)
from pyinfra_nerdctl.deploys.settings import resolve_rootless_settings, resolve_settings
from pyinfra_nerdctl.deploys.steps import Step
from pyinfra_nerdctl.deploys.takeover import plan_takeover
from pyinfra_nerdctl.facts.rootless import parse_rootless_state
from states import converged_state
from test_rootless_units import converged_output, fact_output

ALL = (NERDCTL, BUILDKIT, NERDCTL_FULL)
MINIMAL = (NERDCTL, BUILDKIT)
ABSENT = {"enabled": False, "active": False, "needs_daemon_reload": False, "stale": False}
INSTALL_NAMES = [
    f"Create the fleet's CA in {default_ca_dir()} on the controller",
    "Remove what killed runs left",
    "Install nerdctl 2.3.5 and BuildKit 0.32.2 into /usr/local/bin",
    "Record the versions of the installed binaries",
    "Group for buildkit_socket_group",
    "Directory /etc/nerdctl",
    "Directory /etc/buildkit",
    "Directory /etc/buildkit/tls",
    "Directory /etc/containerd",
    "Modes of the folders the install made",
    "Stop and disable another BuildKit setup",
    "Write /etc/nerdctl/nerdctl.toml",
    "Write /etc/profile.d/nerdctl-docker-alias.sh",
    "Write /etc/systemd/system/containerd.service",
    "Write /etc/containerd/config.toml",
    "Write /etc/buildkit/buildkitd.toml",
    "Write /etc/systemd/system/buildkit.socket",
    "Write /etc/systemd/system/buildkit.service",
    "Write /etc/buildkit/tls/ca.pem",
    "Write /etc/buildkit/tls/server.pem",
    "Remove /etc/profile.d/nerdctl-docker-alias.sh",
    "Wait for the builds in flight on buildkit.service",
    "Stop, disable and remove our containerd.service",
    "Reload systemd units",
    "Enable buildkit.socket",
    "Start buildkit.socket",
    "Restart buildkit.socket",
    "Enable containerd.service",
    "Start containerd.service",
    "Restart containerd.service",
    "Restart buildkit.service",
    "Start buildkit.service",
    "Check that BuildKit answers with the containerd worker",
    "Enable buildkit.service",
    "Disable buildkit.service",
    "Remove the server's TLS files",
]


def _settings(**values):
    return resolve_settings({}.get, values)


def _state(settings, **changes) -> dict:
    state = converged_state(settings)
    state["paths"][settings.containerd_socket] = {"kind": "socket"}
    return {**state, "leftovers": [], "foreign_buildkit": {"units": [], "processes": []}, **changes}


def _install(settings, state, releases=MINIMAL, possible=ALL, retired=(NERDCTL_FULL,)) -> list[Step]:
    takeover = plan_takeover(state, settings.buildkit_takeover)
    changes = plan_changes(settings, takeover.state, releases)
    downloads = ["archive"] * len(changes.outdated)  # carried, never looked into
    return install_steps(settings, state, changes, takeover, releases, possible, retired, downloads, None)


def _busy(step: Step) -> bool:
    return bool(step.commands or step.options.get("downloads") or step.options.get("content"))


def test_a_converged_host_gets_every_install_step_in_order_each_with_nothing_to_do():
    settings = _settings()
    steps = _install(settings, _state(settings))

    assert [step.name for step in steps] == INSTALL_NAMES
    assert [step.name for step in steps if _busy(step)] == []
    assert all(step.unneeded for step in steps)


def test_a_new_host_gets_the_install_the_group_the_folders_the_files_and_the_units():
    settings = _settings(buildkit_socket_group="builders")
    state = _state(
        settings,
        nerdctl=None,
        buildkit={"buildkitd": None, "buildctl": None},
        paths={},
        group_exists=False,
        leftovers=["/var/lib/pyinfra-nerdctl/work/x"],
        units={"socket": dict(ABSENT), "service": dict(ABSENT), "containerd": dict(ABSENT)},
    )
    steps = {step.name: step for step in _install(settings, state)}

    assert steps["Group builders"].commands == ("groupadd --system builders",)
    assert steps["Directory /etc/buildkit"].commands == (
        "mkdir -p /etc/buildkit && chown root:root /etc/buildkit && chmod 755 /etc/buildkit",
    )
    assert steps["Directory /etc/containerd"].commands == ()  # no containerd_config
    assert steps["Install nerdctl 2.3.5 and BuildKit 0.32.2 into /usr/local/bin"].options["downloads"] == (
        "archive",
        "archive",
    )
    assert steps["Write /etc/buildkit/buildkitd.toml"].options["content"].startswith("#")
    assert steps["Enable buildkit.socket"].commands == ("systemctl enable buildkit.socket",)
    assert steps["Start buildkit.socket"].commands == ("systemctl start buildkit.socket",)
    # `systemctl enable` reloads systemd itself.
    assert steps["Reload systemd units"].commands == ()
    assert "rm -rf -- /var/lib/pyinfra-nerdctl/work/x" in steps["Remove what killed runs left"].commands[0]


def test_a_restart_of_a_running_service_waits_for_its_builds_first_and_the_check_follows():
    settings = _settings()
    state = _state(settings)
    state["buildkit"] = {"buildkitd": "0.1.0", "buildctl": "0.1.0"}
    steps = _install(settings, state)
    busy = [step.name for step in steps if _busy(step)]

    assert busy == [
        "Install BuildKit 0.32.2 into /usr/local/bin",
        "Wait for the builds in flight on buildkit.service",
        "Restart buildkit.service",
        "Check that BuildKit answers with the containerd worker",
    ]
    restart = next(step for step in steps if step.name == "Restart buildkit.service")
    assert restart.commands == ("systemctl try-restart --no-block buildkit.service",)


def test_a_deploy_of_nerdctl_alone_has_no_buildkit_steps():
    settings = _settings()
    steps = _install(settings, _state(settings), releases=(NERDCTL,), possible=(NERDCTL,), retired=())

    assert [step.name for step in steps] == [
        "Remove what killed runs left",
        "Install nerdctl 2.3.5 into /usr/local/bin",
        "Record the versions of the installed binaries",
        "Directory /etc/nerdctl",
        "Modes of the folders the install made",
        "Write /etc/nerdctl/nerdctl.toml",
        "Write /etc/profile.d/nerdctl-docker-alias.sh",
        "Remove /etc/profile.d/nerdctl-docker-alias.sh",
    ]


@pytest.mark.parametrize("purge", [False, True])
def test_a_removal_stops_waits_removes_ours_and_purges_only_with_purge(purge):
    settings = _settings()
    state = _state(settings)
    state["paths"]["/var/lib/buildkit"] = {"kind": "dir"}
    state["units"]["service"]["active"] = True
    files = {release: ["/usr/local/bin/x"] for release in ALL}
    steps = removal_steps(settings, state, plan_removal(state, ALL), ALL, purge, files)
    by_name = {step.name: step for step in steps}

    assert [step.name for step in steps][:5] == [
        "Remove what killed runs left",
        "Stop buildkit.service",
        "Stop and disable buildkit.socket",
        "Stop and disable containerd.service",
        "Remove /etc/nerdctl/nerdctl.toml",
    ]
    assert [step.name for step in steps][-3:] == [
        "Remove BuildKit from /usr/local/bin",
        "Remove nerdctl from /usr/local/bin",
        "Remove nerdctl-full from /usr/local",
    ]
    stop = by_name["Stop buildkit.service"].commands
    assert "wait_for_builds" in stop[0] and stop[1:] == (
        "systemctl stop buildkit.service",
        "systemctl reset-failed buildkit.service || true",
    )
    assert by_name["Stop and disable buildkit.socket"].commands == ("systemctl disable --now buildkit.socket",)
    assert by_name["Remove /var/lib/buildkit"].commands == (("rm -rf /var/lib/buildkit",) if purge else ())
    assert by_name["Remove nerdctl from /usr/local/bin"].kind == "remove_release"


def _rootless(lines, **values):
    settings = _settings()
    rootless = resolve_rootless_settings({}.get, {"rootless_user": "alice", **values})
    return settings, rootless, parse_rootless_state(lines)


def test_a_converged_rootless_user_gets_every_step_with_nothing_to_do():
    settings, rootless, state = _rootless(converged_output())
    steps = rootless_steps(settings, rootless, state, plan_rootless(settings, rootless, state))

    assert [step.name for step in steps] == [
        "Packages for rootless containerd",
        "Subordinate IDs",
        "Lingering",
        "The user's systemd manager",
        "Write ~/.config/systemd/user/containerd.service",
        "Write ~/.config/systemd/user/buildkit.socket",
        "Write ~/.config/systemd/user/buildkit.service",
        "Write ~/.config/buildkit/buildkitd.toml",
        "Write ~/.config/nerdctl/nerdctl.toml",
        "Wait for the builds in flight on the user's BuildKit",
        "Reload the user's units",
        "Enable the user's units",
        "Start the user's units",
        "Restart the user's containerd",
        "Restart the user's BuildKit socket",
        "Restart the user's BuildKit",
        "Check that the user's BuildKit answers with the containerd worker",
    ]
    assert [step.name for step in steps if _busy(step) or step.options.get("packages")] == []
    assert all(step.lock_wait == settings.host_lock_wait for step in steps[1:9])


def test_a_new_rootless_user_gets_ids_lingering_files_and_units_under_the_lock():
    settings, rootless, state = _rootless(fact_output(subids=("operator1:100000:65536",)))
    steps = {
        step.name: step for step in rootless_steps(settings, rootless, state, plan_rootless(settings, rootless, state))
    }

    assert steps["Subordinate IDs"].commands[:2] == (
        "grep -q ^alice: /etc/subuid || usermod --add-subuids 165536-231071 alice",
        "grep -q ^alice: /etc/subgid || usermod --add-subgids 165536-231071 alice",
    )
    assert steps["Lingering"].commands[0] == "loginctl enable-linger alice"
    assert steps["The user's systemd manager"].commands == ("systemctl start user@1001.service",)
    assert steps["Write ~/.config/nerdctl/nerdctl.toml"].options["content"].endswith('namespace = "default"\n')
    assert "systemctl --user enable containerd.service buildkit.socket" in steps["Enable the user's units"].commands[0]


def test_removing_a_rootless_user_stops_removes_and_purges_only_with_purge():
    lines = converged_output(("subids_ours=165536-231071", "data=.local/share/containerd"))
    settings, rootless, state = _rootless(lines)
    kept = {step.name: step for step in plan_rootless_removal(settings, rootless, state, purge=False)}
    purged = {step.name: step for step in plan_rootless_removal(settings, rootless, copy.deepcopy(state), purge=True)}

    assert list(kept) == [
        "Wait for the builds in flight on the user's BuildKit",
        "Stop and disable the user's units",
        "Remove the user's units and configs",
        "Reload the user's units",
        "Purge the user's images and build cache",
        "Lingering off",
        "Remove the subordinate IDs",
    ]
    assert "disable --now" in kept["Stop and disable the user's units"].commands[0]
    assert kept["Lingering off"].commands[0] == "loginctl disable-linger alice"
    assert kept["Purge the user's images and build cache"].commands == ()
    assert kept["Remove the subordinate IDs"].unneeded == "subordinate IDs are kept (no purge)"
    assert (
        "rootlesskit rm -rf /home/alice/.local/share/containerd"
        in purged["Purge the user's images and build cache"].commands[0]
    )
    assert purged["Remove the subordinate IDs"].commands[:2] == (
        "systemctl stop user@1001.service",
        "usermod --del-subuids 165536-231071 --del-subgids 165536-231071 alice",
    )


def test_removing_for_a_user_with_nothing_of_ours_has_nothing_to_do():
    settings, rootless, state = _rootless(fact_output())
    steps = plan_rootless_removal(settings, rootless, state, purge=True)

    assert [step.name for step in steps if step.commands] == []
