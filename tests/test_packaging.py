"""The package installs as pyinfra_nerdctl only, from a wheel too."""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pyinfra_nerdctl

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
    (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(metadata_name))
    assert metadata["Version"] == pyinfra_nerdctl.__version__  # the version lives in __init__.py only
    assert "Operating System :: POSIX :: Linux" in metadata.get_all("Classifier")
    assert {url.split(",")[0] for url in metadata.get_all("Project-URL")} >= {"Homepage", "Issues", "Changelog"}
    assert any(requirement.startswith("pyinfra") for requirement in metadata.get_all("Requires-Dist"))


def test_sdist_carries_the_docs_the_readme_links_to(tmp_path):
    # From a copy without egg-info: setuptools keeps the files an earlier build's SOURCES.txt lists.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv*", "*.egg-info", "build", "dist"))
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    docs = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}
    assert docs and docs <= names, f"missing from the sdist: {sorted(docs - names)}"
    assert "README.md" in names


def test_changelog_starts_with_this_release():
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    assert headings[0].startswith(f"## {pyinfra_nerdctl.__version__} ")


def test_imports_under_the_package_name():
    import pyinfra_nerdctl.deploys as deploys
    import pyinfra_nerdctl.facts as facts

    assert callable(deploys.install_build_host) and facts.NerdctlVersion
    assert subprocess.run([sys.executable, "-c", "import deploys"], capture_output=True, cwd="/").returncode != 0
