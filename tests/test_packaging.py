"""The package installs as pyinfra_nerdctl only, from a wheel too."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_holds_only_the_pyinfra_nerdctl_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.startswith("pyinfra_nerdctl-")}
    assert top_level == {"pyinfra_nerdctl"}
    for required in (
        "pyinfra_nerdctl/py.typed",
        "pyinfra_nerdctl/deploys/release-checksums.json",
        "pyinfra_nerdctl/deploys/verify.sh",
        "pyinfra_nerdctl/facts/__init__.py",
    ):
        assert required in names


def test_imports_under_the_package_name():
    import pyinfra_nerdctl.deploys as deploys
    import pyinfra_nerdctl.facts as facts

    assert callable(deploys.install_build_host) and facts.NerdctlVersion
    assert subprocess.run([sys.executable, "-c", "import deploys"], capture_output=True, cwd="/").returncode != 0
