"""Run pyinfra as an operator would: the ``pyinfra`` CLI in a subprocess, with ``-y``.

Every pyinfra 3.x prints its results as text tables; ``--json`` exists from 3.9 on. Tests
that need ``--json`` skip on older pyinfra (the package itself never needs it), and
``results``/``facts`` read the text that every version prints.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
PYINFRA_VERSION = Version(importlib.metadata.version("pyinfra"))
HAS_JSON = PYINFRA_VERSION >= Version("3.9")
# A row of the "--> Results:" table: operation, then Hosts, Success, Error and No Change ("-" for none).
_RESULT_ROW = re.compile(r"^ {4}(?P<operation>\S.*?)\s+(?P<counts>(?:(?:\d+|-)\s+){3}(?:\d+|-))\s*$")


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

    def results(self) -> dict[str, dict[str, int]]:
        """From the text of a real run: operation name to its ``success``, ``error`` and ``no_change`` host counts."""
        table = self.stderr.split("--> Results:", 1)[1].split("\n\n", 1)[0]
        results = {}
        for line in table.splitlines()[2:]:  # the "--> Results:" remainder and the header
            row = _RESULT_ROW.match(line)
            if row and row["operation"] != "Grand total":
                counts = [0 if value == "-" else int(value) for value in row["counts"].split()]
                results[row["operation"]] = dict(zip(("success", "error", "no_change"), counts[1:], strict=True))
        return results

    def facts(self, fact: str) -> dict[str, Any]:
        """From the text of ``pyinfra INVENTORY fact FACT``: host name to the fact's value."""
        text = self.stderr.split(f"--> Fact data for: {fact}", 1)[1]
        return json.JSONDecoder().raw_decode(text[text.index("{") :])[0]

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

    The inventory is written from ``hosts`` unless ``inventory_path`` names a file. A test that asks
    for ``--json`` skips on a pyinfra that has none.
    """
    if as_json and not HAS_JSON:
        pytest.skip(f"needs pyinfra's --json (3.9 or newer); this is pyinfra {PYINFRA_VERSION}")
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
