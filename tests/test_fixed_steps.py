"""A deploy's fixed sequence of steps: each step keeps one identity on every host, whichever steps a host skips."""

from __future__ import annotations

import pyinfra
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra_nerdctl.deploys.operations import fixed_steps, run_commands

# What each host has to do at each of three steps (no command: nothing to do there).
STEPS = {"a": ([], ["echo x"], []), "b": (["echo y"], [], ["echo z"])}


def _prepare(is_cli: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[State, Inventory]:
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    inventory = Inventory((list(STEPS), {}))
    state = State(inventory, Config())
    state.current_stage = StateStage.Prepare
    with ctx_state.use(state):
        for host in inventory:
            with ctx_host.use(host), fixed_steps():
                for index, commands in enumerate(STEPS[host.name]):
                    run_commands(name=f"step {index}", commands=commands, unneeded="nothing to do")
            assert host.loop_position == []
    return state, inventory


def _hosts_by_operation(state: State, inventory: Inventory) -> dict[str, list[str]]:
    return {
        name: [host.name for host in inventory if op_hash in state.ops[host]]
        for op_hash, meta in state.op_meta.items()
        for name in meta.names
    }


def test_the_cli_calls_only_the_steps_with_something_to_do_each_under_one_identity(monkeypatch):
    state, inventory = _prepare(True, monkeypatch)

    assert _hosts_by_operation(state, inventory) == {"step 0": ["b"], "step 1": ["a"], "step 2": ["b"]}
    orders = sorted(meta.op_order for meta in state.op_meta.values())
    names = [next(iter(meta.names)) for meta in sorted(state.op_meta.values(), key=lambda meta: meta.op_order)]
    assert len(set(orders)) == 3 and names == ["step 0", "step 1", "step 2"]


def test_the_api_calls_every_step_on_every_host(monkeypatch):
    """pyinfra's API numbers operations by how many a host has called: skipping would shift them."""
    state, inventory = _prepare(False, monkeypatch)

    assert _hosts_by_operation(state, inventory) == {"step 0": ["a", "b"], "step 1": ["a", "b"], "step 2": ["a", "b"]}
    assert {host.name: state.get_meta_for_host(host).ops_change for host in inventory} == {"a": 1, "b": 2}


def test_outside_a_sequence_a_step_is_a_plain_operation(monkeypatch):
    monkeypatch.setattr(pyinfra, "is_cli", True)
    inventory = Inventory((["a"], {}))
    state = State(inventory, Config())
    state.current_stage = StateStage.Prepare
    (host,) = inventory
    with ctx_state.use(state), ctx_host.use(host):
        run_commands(name="idle", commands=[], unneeded="nothing to do")

    assert _hosts_by_operation(state, inventory) == {"idle": ["a"]}
