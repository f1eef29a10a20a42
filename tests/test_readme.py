"""The README and docs/*.md run as written: every shell block of them, in a fresh test host, section by section.

Each ``## `` section (or ``# `` title) of each of these files with runnable blocks gets its own trixie host (real systemd, a real containerd)
with the repository copied into a non-root user's home folder, as after cloning. The quick start's
blocks run first (only its first block, the install, when a block of the section says it runs
``Instead of the quick start's deploy``), then the section's blocks in order, each as one bash
script that must exit 0. The only things added to a command are what points it at the stand-in
mirror: ``--data github_url=MIRROR`` (unless the command names its own ``github_url``) and the
SHA-256 pins of the stand-in archives, on every ``pyinfra`` command; ``--github-url`` and ``--pin``
on the offline prefetch. The host's pip reads its packages from wheels built on the controller
(``/etc/pip.conf``), because pip cannot reach the package index from a test host.

The quick start is the README's. The markers (first lines of a block, documented in docs/testing.md):
``# Example for other machines``: not run; ``# Needs: THING, ...``: the test provides each thing
(see PROVIDERS) or fails; ``# Instead of the quick start's deploy``: see above; ``# In a fresh clone``:
the section runs in a copy of the repository without the quick start (nothing installed).
"""

from __future__ import annotations

import fcntl
import hashlib
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mirror as mirror_module
import pytest
import testhosts
import tomllib
from hostcheck import MANAGED_FILES, start_k3s_containerd
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL, default_version

ROOT = testhosts.PROJECT_ROOT
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = ("sh", "bash", "shell")
QUICK_START = "Quick start"
EXAMPLE = "# Example for other machines"
NEEDS = "# Needs:"
INSTEAD = "# Instead of the quick start's deploy"
FRESH_CLONE = "# In a fresh clone"
HOST_REPO = f"/home/{testhosts.OPERATOR}/pyinfra-nerdctl"
HOST_WHEELS = "/var/cache/readme-wheels"
ARCH = "amd64"  # the test hosts run this machine's kernel; the mirror's stand-ins are built for amd64
BLOCK_TIMEOUT = 600


@dataclass(frozen=True)
class Block:
    """One fenced shell block of the README or of a file in docs/."""

    section: str
    line: int  # of the opening fence
    text: str
    document: str = "README.md"  # relative to the repository

    @property
    def section_id(self) -> str:
        return section_id(self.document, self.section)

    def marker_lines(self) -> list[str]:
        lines = []
        for line in self.text.splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.strip())
        return lines

    @property
    def example(self) -> bool:
        return any(line.startswith(EXAMPLE) for line in self.marker_lines())

    @property
    def needs(self) -> tuple[str, ...]:
        for line in self.marker_lines():
            if line.startswith(NEEDS):
                return tuple(need.strip() for need in line[len(NEEDS) :].split(",") if need.strip())
        return ()

    @property
    def instead_of_deploy(self) -> bool:
        return any(line.startswith(INSTEAD) for line in self.marker_lines())

    @property
    def fresh_clone(self) -> bool:
        return any(line.startswith(FRESH_CLONE) for line in self.marker_lines())

    def __str__(self) -> str:
        return f"{self.document} line {self.line} ({self.section})"


def section_id(document: str, section: str) -> str:
    """The test id of one ``## `` section of one file: ``docs/rootless.md::Rootless``."""
    return f"{document}::{section}"


QUICK_START_ID = section_id("README.md", QUICK_START)


def readme_fences(text: str) -> list[tuple[str, str, int, str]]:
    """Every fenced block as ``(section, language, line, body)``."""
    fences, section, opened = [], "", None
    for number, line in enumerate(text.splitlines(), 1):
        if opened is None:
            if line.startswith(("# ", "## ")):  # a page of docs/ with one section has it as its title
                section = line.split(" ", 1)[1].strip()
            elif line.startswith("```"):
                opened, body = (line[3:].strip(), number), []
        elif line.startswith("```"):
            fences.append((section, opened[0], opened[1], "\n".join(body) + "\n"))
            opened = None
        else:
            body.append(line)
    return fences


def readme_blocks(text: str, document: str = "README.md") -> list[Block]:
    fences = readme_fences(text)
    return [Block(s, line, body, document) for s, language, line, body in fences if language in SHELL_LANGUAGES]


def document_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def documented_blocks() -> list[Block]:
    """The shell blocks of the README, then of each file in docs/, in order."""
    return [block for path in DOCUMENTS for block in readme_blocks(path.read_text(), document_name(path))]


def blocks_by_section(blocks: list[Block]) -> dict[str, list[Block]]:
    """The runnable blocks of each section, by the section's test id."""
    sections: dict[str, list[Block]] = {}
    for block in blocks:
        if not block.example:
            sections.setdefault(block.section_id, []).append(block)
    return sections


# --- what the test adds to a command -------------------------------------------------------------

# A command word: at the start of a line or after a shell operator, past `sudo` and `NAME=value` words.
_COMMAND_START = r"(?:^|&&|\|\||[;|(])\s*(?:(?:sudo(?:\s+-\S+)*|[A-Za-z_][A-Za-z0-9_]*=\S*)\s+)*"
PYINFRA_COMMAND = re.compile(_COMMAND_START + r"\S*pyinfra(?=\s)", re.MULTILINE)
PREFETCH_COMMAND = re.compile(
    _COMMAND_START + r"\S*python3?\s+-m\s+pyinfra_nerdctl\.deploys\.controller(?=\s)", re.MULTILINE
)


def stand_in_sha256(release: str, version: str, arch: str = ARCH) -> str:
    archive = {
        "nerdctl": mirror_module.nerdctl_archive,
        "nerdctl-full": mirror_module.full_archive,
        "buildkit": mirror_module.buildkit_archive,
    }[release](version, arch)
    return mirror_module.sha256(archive)


def _data_value(command: str, key: str) -> str | None:
    match = re.search(rf"(?:^|\s){key}=(\S+)", command)
    return match.group(1) if match else None


def pyinfra_data(command: str, mirror_url: str) -> list[str]:
    """``--data`` arguments that point one pyinfra command at the mirror and pin the stand-ins it installs."""
    nerdctl = str(_data_value(command, "nerdctl_version") or default_version(NERDCTL)).lstrip("v")
    buildkit = str(_data_value(command, "buildkit_version") or default_version(BUILDKIT)).lstrip("v")
    nerdctl_release = "nerdctl-full" if _data_value(command, "nerdctl_flavor") == "full" else "nerdctl"
    data = [] if _data_value(command, "github_url") else [f"github_url={mirror_url}"]
    data += [
        f"nerdctl_sha256={stand_in_sha256(nerdctl_release, nerdctl)}",
        f"buildkit_sha256={stand_in_sha256('buildkit', buildkit)}",
    ]
    return [f"--data {item}" for item in data]


def prefetch_options(command: str, mirror_url: str) -> list[str]:
    """``--github-url`` and ``--pin`` options that point one prefetch at the mirror's stand-ins."""
    arches = re.findall(r"--arch[ =](\S+)", command) or ["amd64", "arm64"]
    releases = [("nerdctl", v, mirror_module.nerdctl_asset) for v in re.findall(r"--nerdctl[ =](\S+)", command)]
    if "--full" in command.split():
        releases += [("nerdctl-full", version, mirror_module.nerdctl_asset) for _, version, _ in releases]
    releases += [("buildkit", v, mirror_module.buildkit_asset) for v in re.findall(r"--buildkit[ =](\S+)", command)]
    options = [] if "--github-url" in command else [f"--github-url {mirror_url}"]
    for release, version, asset in releases:
        version = version.lstrip("v")
        for arch in arches:
            name = asset(version, arch, True) if release == "nerdctl-full" else asset(version, arch)
            options.append(f"--pin {name}={stand_in_sha256(release, version, arch)}")
    return options


def _logical_lines(script: str) -> list[str]:
    """The script's lines with backslash continuations joined (for reading a command's arguments)."""
    return script.replace("\\\n", " ").splitlines()


def for_test_host(script: str, mirror_url: str) -> str:
    """``script`` with the mirror's address and the stand-in pins added to each pyinfra and prefetch command."""
    lines = []
    for line in _logical_lines(script):
        pyinfra_arguments = " ".join(pyinfra_data(line, mirror_url))
        prefetch_arguments = " ".join(prefetch_options(line, mirror_url))
        line = PYINFRA_COMMAND.sub(lambda match, added=pyinfra_arguments: f"{match.group(0)} {added}", line)
        line = PREFETCH_COMMAND.sub(lambda match, added=prefetch_arguments: f"{match.group(0)} {added}", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


# --- fast checks of the README's blocks and of the rewriting ----------------------------------------


def test_every_fenced_block_names_its_language():
    for path in DOCUMENTS:
        untagged = [line for _, language, line, _ in readme_fences(path.read_text()) if not language]
        assert untagged == [], f"{document_name(path)}: fences without a language (a shell block says sh): {untagged}"


def test_the_docs_folder_is_read():
    assert len(DOCUMENTS) > 1 and all(path.suffix == ".md" for path in DOCUMENTS)
    assert any(block.document.startswith("docs/") and not block.example for block in documented_blocks())


def test_every_need_of_a_readme_block_is_one_the_test_provides():
    for block in documented_blocks():
        unknown = [need for need in block.needs if need not in PROVIDERS]
        assert not unknown, (
            f"{block} needs {unknown}: provide it in tests/test_readme.py PROVIDERS, or mark it {EXAMPLE!r}"
        )


def test_the_quick_start_installs_then_deploys_to_this_machine():
    quick_start = blocks_by_section(readme_blocks(README.read_text()))[QUICK_START_ID]
    assert "pip install ." in quick_start[0].text
    assert "@local" in quick_start[1].text and "install_build_host" in quick_start[1].text


def test_blocks_are_grouped_by_file_and_section():
    blocks = [Block("Flavors", 3, "run\n", "docs/a.md"), Block("Flavors", 9, "run\n"), Block("Flavors", 12, "more\n")]
    assert {key: [block.line for block in group] for key, group in blocks_by_section(blocks).items()} == {
        "docs/a.md::Flavors": [3],
        "README.md::Flavors": [9, 12],
    }
    assert str(blocks[0]) == "docs/a.md line 3 (Flavors)"


# --- links between the README and docs/ -----------------------------------------------------------

MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown file's headings (outside fences); a repeated heading gets ``-1``, ``-2``, ..."""
    found: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            anchor = base = heading_anchor(match.group(1))
            repeat = 0
            while anchor in found:
                repeat += 1
                anchor = f"{base}-{repeat}"
            found.add(anchor)
    return found


def broken_links(path: Path) -> list[str]:
    """Each relative link of ``path`` whose file, or heading in it, does not exist."""
    broken = []
    for target in MARKDOWN_LINK.findall(path.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def test_heading_anchors_are_githubs():
    text = "# A: b's `c`\n```sh\n# not a heading\n```\n## Two\n## Two\n## The units, and why\n"
    assert anchors(text) == {"a-bs-c", "two", "two-1", "the-units-and-why"}


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    for path in DOCUMENTS:
        assert broken_links(path) == [], document_name(path)


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n## Known heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#known-heading) [ok](#here) [web](https://example.com/x.md)\n# Here\n"
        "[gone](missing.md) [no heading](other.md#unknown) [no local](#nowhere)\n"
    )
    assert [problem.split(":")[0] for problem in broken_links(page)] == [
        "missing.md",
        "other.md#unknown",
        "#nowhere",
    ]


def test_markers_are_read_from_the_first_comment_lines():
    block = Block("s", 1, "# Example for other machines: a fleet\n# Needs: k3s, usb\nrun\n# Needs: x\n")
    assert block.example and block.needs == ("k3s", "usb") and not block.instead_of_deploy
    assert not Block("s", 1, "run # Example for other machines\n").example
    assert Block("s", 1, "# Instead of the quick start's deploy\nrun\n").instead_of_deploy
    assert Block("s", 1, "# In a fresh clone\nrun\n").fresh_clone and not block.fresh_clone


def test_only_pyinfra_commands_get_the_mirror_and_pins():
    script = (
        "python3 -m venv .venv && .venv/bin/pip install pyinfra\n"
        "K3S_NODES=@local sudo .venv/bin/pyinfra -y inventories/k3s.py pyinfra_nerdctl.deploys.install_build_host \\\n"
        "    --data nerdctl_version=2.4.0\n"
        ".venv/bin/pyinfra @local pyinfra_nerdctl.deploys.install_build_host --data github_url=/srv/releases\n"
    )
    lines = for_test_host(script, "http://127.0.0.1:1").splitlines()

    assert lines[0] == "python3 -m venv .venv && .venv/bin/pip install pyinfra"
    assert lines[1].startswith(
        "K3S_NODES=@local sudo .venv/bin/pyinfra --data github_url=http://127.0.0.1:1 "
        f"--data nerdctl_sha256={stand_in_sha256('nerdctl', '2.4.0')} "
        f"--data buildkit_sha256={stand_in_sha256('buildkit', default_version(BUILDKIT))} -y inventories/k3s.py"
    )
    assert "github_url=http" not in lines[2] and "--data nerdctl_sha256=" in lines[2]


def test_the_prefetch_gets_the_mirror_and_a_pin_per_archive():
    line = for_test_host(
        ".venv/bin/python -m pyinfra_nerdctl.deploys.controller out --nerdctl 2.3.5 --buildkit v0.32.2 --arch arm64\n",
        "http://127.0.0.1:1",
    )
    assert line.split()[3:] == [
        "--github-url",
        "http://127.0.0.1:1",
        "--pin",
        f"nerdctl-2.3.5-linux-arm64.tar.gz={stand_in_sha256('nerdctl', '2.3.5', 'arm64')}",
        "--pin",
        f"buildkit-v0.32.2.linux-arm64.tar.gz={stand_in_sha256('buildkit', '0.32.2', 'arm64')}",
        "out",
        "--nerdctl",
        "2.3.5",
        "--buildkit",
        "v0.32.2",
        "--arch",
        "arm64",
    ]


# --- the host side --------------------------------------------------------------------------------


def _requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # The test extras too: the README's Tests section installs them in a fresh clone.
    extras = project["project"]["optional-dependencies"]["test"]
    return project["build-system"]["requires"] + project["project"]["dependencies"] + extras


def wheels_for(python_tag: str, glibc_minor: int) -> Path:
    """Wheels of the package's build and runtime requirements for the host's Python, cached per requirements."""
    requirements = _requirements()
    key = hashlib.sha256(f"{python_tag}|{glibc_minor}|{'|'.join(requirements)}".encode()).hexdigest()[:12]
    folder = testhosts.CACHE_DIR / "readme-wheels" / f"{python_tag}-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.is_dir():
            partial = folder.with_suffix(".partial")
            subprocess.run(["rm", "-rf", str(partial)], check=True)
            # An older pip does not widen one manylinux platform to the older ones it covers: name them all.
            machine = platform.machine()
            platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(17, glibc_minor + 1)]
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                "--dest",
                str(partial),
            ]
            command += ["--python-version", python_tag[2:3] + "." + python_tag[3:], "--implementation", "cp"]
            command += ["--abi", python_tag, *(f"--platform={platform}" for platform in platforms)]
            subprocess.run([*command, f"--platform=manylinux2014_{machine}", *requirements], check=True)
            partial.rename(folder)
    return folder


def run_as_operator(host: testhosts.TestHost, script: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """``script`` in bash (errexit, pipefail) as the test hosts' sudo-capable user, from the repository's folder."""
    remote = f"cd {HOST_REPO} 2>/dev/null || cd; exec bash -eo pipefail -c {shlex.quote(script)}"
    return subprocess.run(
        ["ssh", *testhosts.ssh_options(), f"{testhosts.OPERATOR}@{host.address}", remote],
        input=stdin,
        capture_output=True,
        timeout=BLOCK_TIMEOUT,
    )


def copy_repository(host: testhosts.TestHost) -> None:
    """The repository's files (tracked and new, as in this worktree) into the user's home, as after cloning."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    names = b"\0".join(name for name in listed if name and (ROOT / name.decode()).is_file())
    archive = subprocess.run(["tar", "-c", "-C", str(ROOT), "--null", "-T", "-"], input=names, capture_output=True)
    assert archive.returncode == 0, archive.stderr
    unpacked = run_as_operator(host, f"mkdir {HOST_REPO} && tar -x -C {HOST_REPO}", stdin=archive.stdout)
    assert unpacked.returncode == 0, unpacked.stderr


def offer_wheels(host: testhosts.TestHost) -> None:
    """Wheels for the host's Python in HOST_WHEELS, and a pip.conf that installs from them only."""
    probe = "import platform, sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}', platform.libc_ver()[1])"
    python_tag, glibc = host.run(f"python3 -c {shlex.quote(probe)}").stdout.split()
    folder = wheels_for(python_tag, int(glibc.split(".")[1]))
    archive = subprocess.run(["tar", "-c", "-C", str(folder), "."], capture_output=True, check=True).stdout
    subprocess.run(
        ["ssh", *testhosts.ssh_options(), f"root@{host.address}", f"mkdir -p {HOST_WHEELS} && tar -x -C {HOST_WHEELS}"],
        input=archive,
        check=True,
        timeout=120,
    )
    host.run(f"printf '[global]\\nno-index = true\\nfind-links = {HOST_WHEELS}\\n' > /etc/pip.conf")


def check_k3s(host: testhosts.TestHost) -> None:
    toml = host.run("cat /etc/nerdctl/nerdctl.toml").stdout
    assert "/run/k3s/containerd/containerd.sock" in toml and "k8s.io" in toml, toml
    assert "/run/k3s/containerd/containerd.sock" in host.run("buildctl debug workers -v").stdout


@dataclass(frozen=True)
class Provider:
    """What a ``# Needs:`` thing is: how the test gives it to a host, and what it checks after the section."""

    provide: Callable[[testhosts.TestHost], None]
    check: Callable[[testhosts.TestHost], None] | None = None


PROVIDERS = {
    "k3s": Provider(start_k3s_containerd, check_k3s),
}


def check_build_host(host: testhosts.TestHost) -> None:
    """The machine builds: the socket listens and a client gets the containerd worker through it."""
    assert host.run("systemctl is-active buildkit.socket").stdout.strip() == "active"
    assert re.search(r"worker\.executor:\s+containerd$", host.run("buildctl debug workers -v").stdout, re.MULTILINE)


def check_removed(host: testhosts.TestHost) -> None:
    left = host.run(f"ls -d {' '.join(MANAGED_FILES)} /var/lib/buildkit 2>/dev/null || true").stdout.split()
    assert left == [], f"left after the removal: {left}"


# What a block's command promises, checked after the block has run.
PROMISES = {
    "pyinfra_nerdctl.deploys.install_build_host": check_build_host,
    "pyinfra_nerdctl.deploys.remove_build_host": check_removed,
}


def run_block(host: testhosts.TestHost, block: Block, mirror: mirror_module.Mirror) -> None:
    script = for_test_host(block.text, mirror.url)
    served_before = len(mirror.requests)
    result = run_as_operator(host, script)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"{block} exited {result.returncode}:\n{script}\n{output[-4000:]}"
    if re.search(r"github_url=\S*/", block.text) and "github_url=http" not in block.text:
        served = mirror.requests[served_before:]
        assert served == [], f"{block} deploys from a folder, yet the mirror served {served}"
    for command, check in PROMISES.items():
        if command in block.text and "--dry" not in block.text:
            check(host)


def install(host: testhosts.TestHost, block: Block, mirror: mirror_module.Mirror, snapshot: Path, fresh: bool) -> None:
    """The repository as the quick start's install block leaves it: run for real, or as a later section, restored.

    The install takes half a minute of pip in each host; every section after the first reuses what it made.
    """
    if fresh or not snapshot.exists():
        copy_repository(host)
        run_block(host, block, mirror)
        packed = run_as_operator(host, f"tar -c -C {HOST_REPO} .")
        assert packed.returncode == 0, packed.stderr
        snapshot.write_bytes(packed.stdout)
    else:
        restored = run_as_operator(host, f"mkdir {HOST_REPO} && tar -x -C {HOST_REPO}", stdin=snapshot.read_bytes())
        assert restored.returncode == 0, restored.stderr


SECTIONS = blocks_by_section(documented_blocks())
EXAMPLES = [block for block in documented_blocks() if block.example]


@pytest.fixture(scope="session")
def installed_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("readme") / "installed-repository.tar"


@pytest.mark.hosts
@pytest.mark.parametrize("section", list(SECTIONS))
def test_readme_section_runs_as_written(section, boot_hosts, mirror, installed_snapshot):
    install_block, *deploy_blocks = SECTIONS[QUICK_START_ID]
    blocks = SECTIONS[section]
    if section == QUICK_START_ID:
        blocks = deploy_blocks
    elif not any(block.instead_of_deploy for block in blocks):
        blocks = deploy_blocks + blocks
    (host,) = boot_hosts(1, image=testhosts.TRIXIE_CONTAINERD)
    offer_wheels(host)
    if any(block.fresh_clone for block in blocks):
        blocks = SECTIONS[section]
        copy_repository(host)
    else:
        install(host, install_block, mirror, installed_snapshot, fresh=section == QUICK_START_ID)
    needs = [PROVIDERS[need] for block in blocks for need in block.needs]
    for provider in needs:
        provider.provide(host)

    for block in blocks:
        run_block(host, block, mirror)

    for provider in needs:
        if provider.check:
            provider.check(host)


@pytest.mark.parametrize("block", EXAMPLES, ids=str)
def test_readme_example_for_other_machines(block):
    pytest.skip(f"{block}: {block.marker_lines()[0]}")
