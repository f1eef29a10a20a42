"""What vouches for a release archive besides a pin: BuildKit's provenance and nerdctl's signed SHA256SUMS.

Both are read on the controller, before anything reaches a host (docs/trust.md says
what each proves and what it does not).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
# BuildKit's exporter wrote in-toto Statement v0.1 up to v0.30 and v1 since; which one a
# release carries follows the BuildKit that built it, so both are read alike.
STATEMENT_TYPES = ("https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1")
# buildx's provenance attestation: SLSA v0.2 by default, v1 with version=v1 (docker/github-builder).
PROVENANCE_TYPES = ("https://slsa.dev/provenance/v0.2", "https://slsa.dev/provenance/v1")
GPG_PROGRAMS = ("gpg", "gpgv")
# gpgv's status lines that refuse a signature even when another line says it is good.
REFUSING_STATUS = ("BADSIG", "ERRSIG", "REVKEYSIG", "EXPSIG", "NO_PUBKEY")


def provenance_sha256(text: str, asset: str) -> str:
    """The SHA-256 that an in-toto provenance statement gives ``asset``; a ValueError says what disagreed.

    BuildKit's release workflow renames the local exporter's ``provenance.json`` after each
    archive: a bare statement (no envelope, no platform keys) whose ``subject`` lists the
    files of that platform's output, the archive alone, with their digests.

    >>> provenance_sha256(json.dumps({"_type": STATEMENT_TYPES[1], "predicateType": PROVENANCE_TYPES[1],
    ...     "subject": [{"name": "a.tar.gz", "digest": {"sha256": 64 * "a"}}]}), "a.tar.gz") == 64 * "a"
    True
    """
    try:
        statement: Any = json.loads(text)
    except ValueError as error:
        raise ValueError("is not an in-toto statement (not JSON)") from error
    kind = statement.get("_type") if isinstance(statement, dict) else None
    if kind not in STATEMENT_TYPES:
        raise ValueError(f"is not an in-toto statement (_type {kind!r})")
    if statement.get("predicateType") not in PROVENANCE_TYPES:
        raise ValueError(f"is an in-toto statement of {statement.get('predicateType')!r}, not SLSA provenance")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not all(isinstance(each, dict) for each in subjects):
        raise ValueError("is an in-toto statement without a subject list")
    names = [str(each.get("name", "")) for each in subjects]
    digests = {
        str(each["digest"].get("sha256", "") if isinstance(each.get("digest"), dict) else "").lower()
        for each, name in zip(subjects, names, strict=True)
        if name.rsplit("/", 1)[-1] == asset
    }
    if not digests:
        raise ValueError(f"names {', '.join(names) or 'no file'}, not {asset}")
    if len(digests) > 1 or not SHA256_PATTERN.match(next(iter(digests))):
        raise ValueError(f"gives {asset} no single SHA-256 ({', '.join(sorted(digests))})")
    return digests.pop()


def missing_gpg_programs() -> list[str]:
    return [program for program in GPG_PROGRAMS if shutil.which(program) is None]


def good_signer(keyring: str, signed: str, signature: str) -> str:
    """The fingerprint of the key in ``keyring`` (armored public keys) that made ``signature`` over ``signed``.

    gpg imports the keyring into a temporary GNUPGHOME (no agent is started) and gpgv checks
    against that alone: the user's own keyring and trust settings play no part. Anything but
    a good signature by one of those keys is a ValueError naming gpgv's verdict.
    """
    with tempfile.TemporaryDirectory(prefix="pyinfra-nerdctl-gpg-") as home:
        keybox = Path(home, "keyring.kbx")
        imported = subprocess.run(
            ["gpg", "--batch", "--no-autostart", "--homedir", home, "--no-default-keyring"]
            + ["--keyring", str(keybox), "--import", keyring],
            capture_output=True,
            text=True,
        )
        if imported.returncode != 0 or not keybox.exists():
            raise ValueError(
                f"cannot be checked: no public key could be read from {keyring} ({_last_line(imported.stderr)})"
            )
        Path(home, "signed").write_text(signed)
        Path(home, "signature").write_text(signature)
        checked = subprocess.run(
            ["gpgv", "--homedir", home, "--keyring", str(keybox), "--status-fd", "1"]
            + [str(Path(home, "signature")), str(Path(home, "signed"))],
            capture_output=True,
            text=True,
        )
    status = [line.split()[1:] for line in checked.stdout.splitlines() if line.startswith("[GNUPG:] ")]
    valid = [words for words in status if words[0] == "VALIDSIG"]
    if checked.returncode != 0 or not valid or any(words[0] in REFUSING_STATUS for words in status):
        raise ValueError(f"is not a good signature by a key in {keyring} (gpgv: {_last_line(checked.stderr)})")
    return valid[0][-1]  # the primary key's fingerprint, which MAINTAINERS lists


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
