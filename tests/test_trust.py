"""What vouches for an archive beyond a pin: BuildKit's provenance, nerdctl's signed SHA256SUMS.

Each refusal happens on the controller, before anything reaches a host (the host test at
the end shows a host untouched by each). Every test reads its own release versions, because
the controller reads a release file once per run (here: per test session).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mirror as mirror_module
import pytest
import testhosts
from conftest import inventory
from hostcheck import DEPLOY, boot_build_host, client_call
from mirror import buildkit_archive, buildkit_asset, nerdctl_asset, nerdctl_path, provenance, sha256
from pyinfra_cli import run_pyinfra
from pyinfra_nerdctl.deploys.controller import cached_archive
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL, ReleaseError, checksum_table, resolve_download
from pyinfra_nerdctl.deploys.settings import SettingError, resolve_settings
from pyinfra_nerdctl.deploys.trust import good_signer, provenance_sha256
from test_safety import host_state

PROVENANCE = Path(__file__).parent / "provenance"
# In CI a missing gpg fails these tests instead of skipping them (as the host tools do, tests/conftest.py).
needs_gpg = pytest.mark.skipif(
    not os.environ.get("CI") and not all(map(shutil.which, ("gpg", "gpgv", "gpgconf", "gpg-agent"))),
    reason="needs gpg, gpgv, gpgconf and gpg-agent (Debian packages of those names; .ci/run installs them)",
)


def _asset_of(statement: Path) -> str:
    return statement.name.replace(".provenance.json", ".tar.gz")


@pytest.mark.parametrize("statement", sorted(PROVENANCE.glob("*.provenance.json")), ids=lambda path: path.name)
def test_buildkit_provenance_in_each_shape_upstream_used_gives_the_archive_its_known_hash(statement):
    """Statement v0.1 with SLSA v0.2 and v1, Statement v1 with SLSA v1: each gives the table's hash."""
    version = statement.name.split("-v", 1)[1].split(".linux")[0]
    asset = _asset_of(statement)
    assert provenance_sha256(statement.read_text(), asset) == checksum_table()["buildkit"][version][asset]


def _statement(**changes: object) -> str:
    statement = json.loads((PROVENANCE / "buildkit-v0.12.5.linux-amd64.provenance.json").read_text())
    statement.update(changes)
    return json.dumps(statement)


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("<html>Please log in</html>", "is not an in-toto statement (not JSON)"),
        ("[]", "is not an in-toto statement (_type None)"),
        (  # a DSSE envelope, as in the .sigstore.json bundle: its payload is unverified here, so not taken
            json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": base64.b64encode(b"{}").decode()}),
            "is not an in-toto statement (_type None)",
        ),
        (_statement(_type="https://in-toto.io/Statement/v9"), "is not an in-toto statement"),
        (_statement(predicateType="https://spdx.dev/Document"), "'https://spdx.dev/Document', not SLSA provenance"),
        (_statement(subject={"name": "x"}), "without a subject list"),
        (
            _statement(subject=[{"name": "buildkit-v0.12.5.linux-arm64.tar.gz", "digest": {"sha256": "b" * 64}}]),
            "names buildkit-v0.12.5.linux-arm64.tar.gz, not buildkit-v0.12.5.linux-amd64.tar.gz",
        ),
        (
            _statement(
                subject=[
                    {"name": "buildkit-v0.12.5.linux-amd64.tar.gz", "digest": {"sha256": digest}}
                    for digest in ("a" * 64, "b" * 64)
                ]
            ),
            "gives buildkit-v0.12.5.linux-amd64.tar.gz no single SHA-256",
        ),
        (
            _statement(subject=[{"name": "buildkit-v0.12.5.linux-amd64.tar.gz", "digest": {"sha512": "a" * 128}}]),
            "no single SHA-256",
        ),
        (
            _statement(subject=[{"name": "buildkit-v0.12.5.linux-amd64.tar.gz", "digest": "a" * 64}]),
            "no single SHA-256",
        ),
    ],
)
def test_a_provenance_that_does_not_vouch_for_the_archive_is_refused(text, refusal):
    with pytest.raises(ValueError) as refused:
        provenance_sha256(text, "buildkit-v0.12.5.linux-amd64.tar.gz")
    assert refusal in str(refused.value)


def test_buildkit_outside_the_table_takes_its_hash_from_the_release_provenance(mirror, tmp_path):
    download = resolve_download(BUILDKIT, "0.29.91", "arm64", mirror.url, None)
    archive = buildkit_archive("0.29.91", "arm64")
    assert (download.sha256, download.checksum_source) == (
        sha256(archive),
        "buildkit-v0.29.91.linux-arm64.provenance.json",
    )
    cached = cached_archive(download, str(tmp_path))
    assert cached.read_bytes() == archive
    kept = cached.with_name("buildkit-v0.29.91.linux-arm64.provenance.json")
    assert kept.read_bytes() == provenance("0.29.91", "arm64")
    # A pin, then the table, come first: nothing is read for them (the mirror is shared with earlier tests).
    served_before = len(mirror.requests)
    assert resolve_download(BUILDKIT, "0.31.92", "amd64", mirror.url, "c" * 64).sha256 == "c" * 64
    assert resolve_download(BUILDKIT, "0.12.5", "amd64", mirror.url, None).checksum_source == "shipped checksum table"
    assert mirror.requests[served_before:] == []


def test_a_tampered_archive_or_a_provenance_naming_other_bytes_is_refused_before_a_host(mirror, tmp_path):
    download = resolve_download(BUILDKIT, "0.31.93", "amd64", mirror.url, None)
    mirror.fail("wrong-bytes", buildkit_asset("0.31.93", "amd64"))
    with pytest.raises(ReleaseError, match="SHA-256 mismatch"):
        cached_archive(download, str(tmp_path))
    mirror.heal()

    other = sha256(buildkit_archive("0.31.94", "arm64"))
    mirror.serve(
        mirror_module.provenance_path("0.31.94", "amd64"),
        provenance("0.31.94", "amd64", {buildkit_asset("0.31.94", "amd64"): other}),
    )
    named = resolve_download(BUILDKIT, "0.31.94", "amd64", mirror.url, None)
    with pytest.raises(ReleaseError, match=f"SHA-256 mismatch .*expected {other}"):
        cached_archive(named, str(tmp_path))
    assert not list(tmp_path.rglob("*.tar.gz"))


def test_a_provenance_for_another_archive_or_none_at_all_is_refused_in_one_line(mirror):
    mirror.serve(mirror_module.provenance_path("0.31.95", "amd64"), provenance("0.31.95", "arm64"))
    with pytest.raises(ReleaseError) as refused:
        resolve_download(BUILDKIT, "0.31.95", "amd64", mirror.url, None)
    assert str(refused.value) == (
        "BuildKit 0.31.95: buildkit-v0.31.95.linux-amd64.tar.gz refused: its buildkit-v0.31.95.linux-amd64"
        ".provenance.json names buildkit-v0.31.95.linux-arm64.tar.gz, not buildkit-v0.31.95.linux-amd64.tar.gz"
    )
    with pytest.raises(ReleaseError) as unpublished:  # BuildKit before v0.11 published none
        resolve_download(BUILDKIT, "0.10.98", "amd64", mirror.url, None)
    assert "its provenance cannot be read (" in str(unpublished.value)
    assert str(unpublished.value).endswith(
        "HTTP 404; BuildKit publishes one from v0.11): pin it with buildkit_sha256=<sha256>"
    )
    assert "\n" not in str(unpublished.value)


@pytest.fixture
def keyring(tmp_path) -> str:
    """The mirror's signing key as an operator's ``nerdctl_gpg_keyring`` file."""
    path = tmp_path / "nerdctl-signers.asc"
    path.write_bytes(mirror_module.signer_public_key())
    return str(path)


def _other_keyring(tmp_path: Path) -> str:
    home = tmp_path / "other-gnupg"
    home.mkdir(mode=0o700)
    try:
        mirror_module.gpg(home, "--passphrase", "", "--quick-gen-key", "someone else <x@example.invalid>", "ed25519")
        path = tmp_path / "other.asc"
        path.write_bytes(mirror_module.gpg(home, "--armor", "--export"))
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True)
    return str(path)


@needs_gpg
def test_with_a_keyring_nerdctl_needs_a_sha256sums_signed_by_one_of_its_keys(mirror, keyring, tmp_path):
    download = resolve_download(NERDCTL, "2.7.1", "amd64", mirror.url, None, keyring=keyring)
    assert download.sha256 == sha256(mirror_module.nerdctl_archive("2.7.1", "amd64"))
    fingerprint = mirror_module.gpg(mirror_module._signer_home(), "--with-colons", "--fingerprint").decode()
    primary = next(line.split(":")[9] for line in fingerprint.splitlines() if line.startswith("fpr:"))
    assert download.checksum_source == f"SHA256SUMS, SHA256SUMS signed by {primary}"
    cached = cached_archive(download, str(tmp_path / "cache"))
    assert sorted(path.name for path in cached.parent.iterdir()) == sorted(
        ["SHA256SUMS", "SHA256SUMS.asc", nerdctl_asset("2.7.1", "amd64")]
    )
    with pytest.raises(ReleaseError, match=r"SHA256SUMS.asc is not a good signature by a key in .*other.asc"):
        resolve_download(NERDCTL, "2.7.1", "amd64", mirror.url, None, keyring=_other_keyring(tmp_path))


@needs_gpg
def test_sums_changed_with_their_archive_match_but_their_signature_does_not(mirror, keyring):
    tampered = buildkit_archive("0.31.96", "amd64")  # any other bytes
    sums = mirror_module.nerdctl_sums("2.7.2").decode()
    sums = sums.replace(sha256(mirror_module.nerdctl_archive("2.7.2", "amd64")), sha256(tampered))
    mirror_module.nerdctl_sums_signature("2.7.2")  # signed before the change, as upstream's
    mirror.serve(nerdctl_path("2.7.2", "SHA256SUMS"), sums.encode())
    mirror.serve(nerdctl_path("2.7.2", nerdctl_asset("2.7.2", "amd64")), tampered)
    assert resolve_download(NERDCTL, "2.7.2", "amd64", mirror.url, None).sha256 == sha256(tampered)  # no keyring
    with pytest.raises(ReleaseError) as refused:
        resolve_download(NERDCTL, "2.7.2", "amd64", mirror.url, None, keyring=keyring)
    assert str(refused.value).startswith(
        f"nerdctl 2.7.2: nerdctl-2.7.2-linux-amd64.tar.gz refused: the release's SHA256SUMS.asc is not a good "
        f"signature by a key in {keyring} (gpgv: "
    )
    assert "BAD signature" in str(refused.value)


@needs_gpg
def test_a_missing_signature_with_a_keyring_set_is_refused(mirror, keyring):
    mirror.fail("404", "v2.7.3/SHA256SUMS.asc")
    with pytest.raises(ReleaseError) as refused:
        resolve_download(NERDCTL, "2.7.3", "amd64", mirror.url, None, keyring=keyring)
    assert str(refused.value) == (
        "nerdctl 2.7.3: nerdctl-2.7.3-linux-amd64.tar.gz refused: nerdctl_gpg_keyring is set and "
        f"{mirror.url}/containerd/nerdctl/releases/download/v2.7.3/SHA256SUMS.asc answered HTTP 404"
    )


@needs_gpg
def test_a_pinned_or_tabled_hash_must_agree_with_the_signed_sums(mirror, keyring):
    """The stand-in 2.3.5 is not upstream's: the signed SHA256SUMS disagrees with the table, and wins."""
    with pytest.raises(ReleaseError) as refused:
        resolve_download(NERDCTL, "2.3.5", "amd64", mirror.url, None, keyring=keyring)
    table = checksum_table()["nerdctl"]["2.3.5"]["nerdctl-2.3.5-linux-amd64.tar.gz"]
    stand_in = sha256(mirror_module.nerdctl_archive("2.3.5", "amd64"))
    assert str(refused.value).endswith(
        f"the shipped checksum table says {table}, the signed SHA256SUMS lists {stand_in}"
    )
    pinned = resolve_download(NERDCTL, "2.3.5", "amd64", mirror.url, stand_in, keyring=keyring)
    assert pinned.checksum_source.startswith("explicit pin, SHA256SUMS signed by ")
    # BuildKit publishes no GPG signature: nerdctl's keyring does not concern it.
    assert resolve_download(BUILDKIT, "0.12.5", "amd64", mirror.url, None, keyring=keyring).evidence == ()


@needs_gpg
def test_the_keyring_setting_is_a_file_on_the_controller(keyring, tmp_path):
    assert resolve_settings({}.get, {"nerdctl_gpg_keyring": keyring}).nerdctl_gpg_keyring == keyring
    assert resolve_settings({}.get, {}).nerdctl_gpg_keyring is None
    with pytest.raises(SettingError, match=r"nerdctl_gpg_keyring='.*nowhere.asc' is not a file on the controller"):
        resolve_settings({}.get, {"nerdctl_gpg_keyring": str(tmp_path / "nowhere.asc")})
    with pytest.raises(ValueError, match="no public key could be read from"):
        good_signer(str(tmp_path), "", "")


@needs_gpg
def test_prefetch_keeps_what_vouches_for_each_archive(mirror, keyring, tmp_path):
    def prefetch(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pyinfra_nerdctl.deploys.controller", str(tmp_path / "releases")]
            + ["--github-url", mirror.url, "--arch", "amd64", *arguments],
            capture_output=True,
            text=True,
        )

    done = prefetch("--nerdctl", "2.7.4", "--buildkit", "0.31.97", "--nerdctl-gpg-keyring", keyring)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "releases"
    kept = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert kept == [
        "containerd/nerdctl/releases/download/v2.7.4/SHA256SUMS",
        "containerd/nerdctl/releases/download/v2.7.4/SHA256SUMS.asc",
        "containerd/nerdctl/releases/download/v2.7.4/nerdctl-2.7.4-linux-amd64.tar.gz",
        "moby/buildkit/releases/download/v0.31.97/buildkit-v0.31.97.linux-amd64.provenance.json",
        "moby/buildkit/releases/download/v0.31.97/buildkit-v0.31.97.linux-amd64.tar.gz",
    ]
    # The folder serves as github_url: the controller reads the same files from it.
    offline = f"file://{folder}"
    buildkit = resolve_download(BUILDKIT, "0.31.97", "amd64", offline, None)
    assert buildkit.sha256 == sha256(buildkit_archive("0.31.97", "amd64"))
    nerdctl = resolve_download(NERDCTL, "2.7.4", "amd64", offline, None, keyring=keyring)
    assert nerdctl.evidence == (f"{offline}/{kept[0]}", f"{offline}/{kept[1]}")
    mirror.fail("404", "v2.7.5/SHA256SUMS.asc")
    refused = prefetch("--nerdctl", "2.7.5", "--nerdctl-gpg-keyring", keyring)
    assert refused.returncode == 1 and "nerdctl_gpg_keyring is set and" in refused.stderr
    assert not (tmp_path / "releases/containerd/nerdctl/releases/download/v2.7.5").exists()


@pytest.mark.hosts
@needs_gpg
def test_releases_nothing_vouches_for_are_refused_and_the_host_is_untouched(boot_hosts, mirror, keyring):
    host = boot_build_host(boot_hosts, testhosts.TRIXIE_CONTAINERD)
    before = host_state(host)
    # nerdctl 2.8.1: SHA256SUMS changed together with its archive, the signature not.
    tampered = buildkit_archive("0.28.1", "amd64")
    honest = sha256(mirror_module.nerdctl_archive("2.8.1", "amd64"))
    mirror_module.nerdctl_sums_signature("2.8.1")
    mirror.serve(
        nerdctl_path("2.8.1", "SHA256SUMS"),
        mirror_module.nerdctl_sums("2.8.1").replace(honest.encode(), sha256(tampered).encode()),
    )
    mirror.serve(nerdctl_path("2.8.1", nerdctl_asset("2.8.1", "amd64")), tampered)
    # BuildKit 0.28.3: its provenance is the arm64 archive's.
    mirror.serve(mirror_module.provenance_path("0.28.3", "amd64"), provenance("0.28.3", "arm64"))
    signed = {
        "github_url": mirror.url,
        "nerdctl_version": "2.8.4",
        "buildkit_version": "0.28.4",
        "nerdctl_gpg_keyring": keyring,
    }
    for change, fault, message in (
        ({"nerdctl_version": "2.8.1"}, None, "SHA256SUMS.asc is not a good signature by a key in"),
        ({"nerdctl_version": "2.8.2"}, "v2.8.2/SHA256SUMS.asc", "v2.8.2/SHA256SUMS.asc answered HTTP 404"),
        ({"buildkit_version": "0.28.3"}, None, "names buildkit-v0.28.3.linux-arm64.tar.gz, not buildkit-v0.28.3"),
    ):
        mirror.heal()
        if fault:
            mirror.fail("404", fault)
        run = run_pyinfra(inventory([host], **{**signed, **change}), DEPLOY)
        assert run.returncode != 0 and f"{host.name}: " in run.output and message in run.output, run.output
        assert host_state(host) == before, change  # not even the package's own folder: nothing reached the host

    mirror.heal()
    run = run_pyinfra(inventory([host], **signed), DEPLOY)  # nothing pinned, in no table
    assert run.returncode == 0, run.output
    assert client_call(host)["buildkitd.version"] == "0.28.4"
    assert host.run("/usr/local/bin/nerdctl --version").stdout == "nerdctl version 2.8.4\n"

    # Tampered on the way: the host's download fails the hash the provenance gave, and the install stays.
    installed = host_state(host)
    mirror.fail("wrong-bytes", "buildkit-v0.28.5.linux-amd64.tar.gz")
    run = run_pyinfra(inventory([host], **{**signed, "buildkit_version": "0.28.5"}), DEPLOY)
    assert run.returncode != 0 and "SHA-256 mismatch" in run.output, run.output
    assert host_state(host) == installed
