"""Run pyinfra as an operator would: the ``pyinfra`` CLI in a subprocess, with ``-y``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


@dataclass
class PyinfraRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def json(self) -> dict[str, Any]:
        """The ``--json`` document pyinfra printed on stdout."""
        return json.loads(self.stdout[self.stdout.index("{") :])

    def changes_made(self) -> dict[str, list[str]]:
        """From a real ``--json`` run: host name to the names of the operations that changed it."""
        changes: dict[str, list[str]] = {}
        for operation in self.json["results"]["operations"]:
            for host_name in operation["success"]:
                changes.setdefault(host_name, []).append(operation["name"])
        return changes

    def changed_hosts(self) -> dict[str, list[str]]:
        """From a ``--dry --json`` plan: host name to the names of the operations it would change."""
        plan = self.json
        changes: dict[str, list[str]] = {}
        for operation in plan["plan"]:
            for host_name in operation.get("hosts_with_change", []) + operation.get(
                "hosts_with_conditional_change", []
            ):
                changes.setdefault(host_name, []).append(operation["name"])
        return changes


def write_inventory(directory: Path, hosts: list[tuple[str, dict[str, Any]]]) -> Path:
    """An ``inventory.py`` with one ``(name, data)`` entry per host."""
    path = directory / "inventory.py"
    path.write_text(f"hosts = {hosts!r}\n")
    return path


def run_pyinfra(
    hosts: list[tuple[str, dict[str, Any]]],
    *operations: str,
    data: dict[str, Any] | None = None,
    dry: bool = False,
    as_json: bool = False,
    extra_args: tuple[str, ...] = (),
    cwd: Path | None = None,
    inventory_path: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> PyinfraRun:
    """``pyinfra -y [--json] INVENTORY OPERATIONS...`` (``--dry`` instead of ``-y``), ``--data key=value`` per item.

    The inventory is written from ``hosts`` unless ``inventory_path`` names a file.
    """
    with tempfile.TemporaryDirectory() as tmp:
        inventory = inventory_path or write_inventory(Path(tmp), hosts)
        # -y skips change detection, so a plan is only printed by --dry without it.
        command = [PYINFRA, *([] if dry else ["-y"]), str(inventory), *operations]
        command[2:2] = [f"--data={key}={value}" for key, value in (data or {}).items()]
        if dry:
            command.insert(1, "--dry")
        if as_json:
            command.insert(1, "--json")
        command[1:1] = list(extra_args)
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})}
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=cwd or tmp, env=environment, timeout=timeout
        )
    return PyinfraRun(result.returncode, result.stdout, result.stderr)
