"""Operations pyinfra lacks, the steps every deploy is made of, and the host lock and folders they share.

- ``fixed_steps`` / ``step_operation``: a deploy's fixed sequence of steps, each one operation
  with the same identity on every host; in the CLI an idle step is not called at all.
- ``release_files`` / ``remove_release_files``: release archives installed verified and
  atomically, and removed by their file lists. pyinfra's ``files.download`` moves the file
  into place before it checks the hash, so a bad download would land; here nothing reaches
  ``bin_dir`` before every archive of the step has matched its SHA-256 in full.
  ``remember_script`` records the installed binaries' versions; ``naming_a_kill`` names the
  signal that killed an install.
- ``write_file``, ``root_directory``, ``run_commands``: steps decided from one fact, so
  they read nothing more (but a file's current content with ``--diff``, ``show_diff``).
- ``lock_commands`` / ``locked``: the host's lock, held by the install, removal and check
  steps and by every rootless step that changes the host, so two runs at once take turns;
  ``leftovers_script`` removes what killed runs left, while no run holds it.
- ``fleet_ca``: the fleet's CA written on the controller, when the run executes (a ``--dry`` run writes nothing).
- ``ClaimedUploadCommand``: an upload to a name the run claimed (``claim_uploads``), taken back when it fails.
"""

from __future__ import annotations

import inspect
import secrets
import shlex
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from functools import partial, wraps
from io import StringIO
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ParamSpec, cast

import pyinfra
from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, Host, State, StringCommand, operation

from ..certs import Authority, CertError, save_ca
from ..facts import manifest_glob, manifest_path, shell_glob
from ..facts.versions import VERSION_KEY, VERSIONED_BINARIES
from ..layout import (
    BINARY_VERSIONS,
    CREATED_FOLDERS,
    FRESH_HOST_MARK,
    STALE_MINUTES,
    TEMP_PREFIX,
    UPLOAD_DIR,
    WORK_DIR,
)
from .commands import (
    claim_uploads,
    lock_commands,
    locked,
    naming_a_kill,
    private_temp_file,
    replace_file,
    take_back_uploads,
)
from .commands import root_directory as root_directory_command
from .controller import cache_path, cached_archive
from .releases import Download, Release, ReleaseError

if TYPE_CHECKING:
    from pyinfra.api.arguments import ConnectorArguments
    from pyinfra.api.arguments_typed import PyinfraOperation

try:
    from pyinfra.operations.util.files import generate_color_diff
except ImportError:  # older pyinfra 3.x: a plain unified diff
    from difflib import unified_diff

    def generate_color_diff(current_lines: list[str], desired_lines: list[str]) -> Generator[str, None, None]:
        return (line.rstrip("\n") for line in unified_diff(current_lines, desired_lines))


# The position of the current step in each host's fixed sequence (``fixed_steps``), by host name.
_step_positions: dict[str, int] = {}


@contextmanager
def fixed_steps() -> Iterator[None]:
    """A deploy's fixed sequence of steps: inside, each ``step_operation`` call takes the next position.

    The position goes into ``host.loop_position``, which pyinfra adds to every operation's
    identity (its order and hash), so a step is the same operation on every host whatever
    the host's other steps, whether or not pyinfra sees our stack frames (an editable
    install) or skips them (a normal one, under a ``site-packages/pyinfra`` prefix).

    Every operation called inside must be a ``step_operation``: a plain one would take the
    position of the step before it, and where that step was skipped on some hosts, its
    identity would differ from host to host.
    """
    outer = _step_positions.get(host.name)
    _step_positions[host.name] = 0
    host.loop_position.append(0)
    try:
        yield
    finally:
        host.loop_position.pop()
        if outer is None:
            del _step_positions[host.name]
        else:
            _step_positions[host.name] = outer


def _arguments(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The operation's own arguments by name, defaults applied (pyinfra's global ones, like ``name``, left out)."""
    bound = signature.bind(*args, **{key: value for key, value in kwargs.items() if key in signature.parameters})
    bound.apply_defaults()
    return bound.arguments


P = ParamSpec("P")


def step_operation(
    idle: Callable[..., str | None],
) -> Callable[[Callable[P, Generator[Any, None, None]]], PyinfraOperation[P]]:
    """An operation that is one step of a fixed sequence; ``idle(**arguments)`` is why it has nothing to do, or None.

    Outside ``fixed_steps`` it is a plain pyinfra operation, a no-op saying why when idle.
    Inside, in the CLI, an idle step is not called at all (its reason goes to the debug log):
    pyinfra reads the whole call stack for every operation call, which made a converged
    host's no-op steps most of the controller's cost. Its position still counts, so the
    next steps keep their identity. pyinfra's API (not the CLI) numbers operations by how
    many a host has called, so there every step is called, a no-op where idle.
    """

    def decorator(body: Callable[P, Generator[Any, None, None]]) -> PyinfraOperation[P]:
        signature = inspect.signature(body)

        @operation()
        @wraps(body)
        def as_operation(*args: Any, **kwargs: Any) -> Generator[Any, None, None]:
            reason = idle(**_arguments(signature, args, kwargs))
            if reason is not None:
                host.noop(reason)
                return
            yield from body(*args, **kwargs)

        @wraps(as_operation)
        def step(*args: Any, **kwargs: Any) -> Any:
            position = _step_positions.get(host.name)
            if position is None:
                return as_operation(*args, **kwargs)
            _step_positions[host.name] = host.loop_position[-1] = position + 1
            if pyinfra.is_cli:
                reason = idle(**_arguments(signature, args, kwargs))
                if reason is not None:
                    logger.debug(f"{host.name}: {kwargs.get('name', body.__name__)}: no change, {reason}")
                    return None
            return as_operation(*args, **kwargs)

        # Called as pyinfra's operation is: the body's arguments and pyinfra's global ones (``name``).
        return cast("PyinfraOperation[P]", step)

    return decorator


SHELL_DIR = Path(__file__).parent
# Shell that runs on hosts lives in .sh files beside this module, where shellcheck reads it.
DROP_FUNCTIONS = (SHELL_DIR / "drop.sh").read_text()
VERSION_FUNCTIONS = (SHELL_DIR / "versions.sh").read_text()
INSTALL_FUNCTIONS = DROP_FUNCTIONS + VERSION_FUNCTIONS + (SHELL_DIR / "install.sh").read_text()


def _shell_variables() -> str:
    """Where the shell functions keep their list of the folders this package made."""
    return f"folders={shlex.quote(CREATED_FOLDERS)}"


def _version_variables() -> str:
    """Where ``versions.sh`` keeps the binaries' versions, and what it keys them by."""
    return f"versions={shlex.quote(BINARY_VERSIONS)}\nversion_key={shlex.quote(VERSION_KEY)}"


class ClaimedUploadCommand(FileUploadCommand):
    """An upload to a name ``claim_uploads`` took that, when it fails, runs ``take_back`` (``take_back_uploads``)."""

    def __init__(self, src: str | IO[Any], dest: str, take_back: str) -> None:
        super().__init__(src, dest)
        self.take_back = take_back

    def execute(self, state: State, host: Host, connector_arguments: ConnectorArguments) -> bool:
        uploaded = False
        try:
            uploaded = bool(super().execute(state, host, connector_arguments))
        finally:
            if not uploaded:
                host.run_shell_command(StringCommand(self.take_back), **connector_arguments)
        return uploaded


def upload_path(download: Download, run_token: str) -> str:
    """Where an archive the controller uploads waits for ``install_script``: root's folder, one name per run.

    A name of its own per run, so that two runs at once never take each other's upload.
    """
    return f"{UPLOAD_DIR}/{download.sha256}.{run_token}"


def install_script(
    downloads: Sequence[Download],
    dest: str,
    run_token: str | None = None,
    retired: Sequence[Release] = (),
    lock_wait: int = 600,
) -> str:
    """The shell script that installs the files of every archive in ``downloads`` under ``dest``.

    ``retired`` lists releases of the other flavor: the files their manifests list go,
    except those the new archives put back in the same place. Manifests hold absolute
    paths, so they are right wherever the other flavor was installed; folders left
    empty go too, if this package made them (``CREATED_FOLDERS``).

    Every folder the script makes (``dest``'s missing parents, the archives' own
    folders) is ``root:root 0755`` and every file it writes has its mode set, whatever
    the umask; each new folder is listed in ``CREATED_FOLDERS`` as soon as it exists.
    The script runs in the C locale, so names sort and match byte by byte.

    With ``run_token``, the archives were uploaded to ``upload_path`` instead of being
    downloaded by the host; they are verified all the same, and they and the run's mark
    (``claim_uploads``) go when the script ends.

    The script holds the host's lock (``lock_commands``) from start to end, so that two
    runs at once install one after the other; a run waits at most ``lock_wait`` seconds.

    All archives are downloaded to a temporary folder (curl, else wget) and their
    SHA-256 compared in full before any is unpacked; they are unpacked into a
    fresh folder inside ``dest`` (same filesystem, so every move is an atomic
    rename). Files move in with the version-carrying binaries last, so an
    interrupted run still reports the old version and a rerun repeats it. Files
    that the previous release of an archive had and this one lacks are removed
    (manifests under ``STATE_DIR``; before the moves a manifest lists old and new
    files alike, so a removal after an interrupted run still finds them all).
    Last, the ``--version`` line of each of the archives' ``VERSIONED_BINARIES`` is recorded (``versions.sh``), so
    that the next runs' facts read it rather than execute the binary.
    Temporary files go on success and failure, and those of an earlier run that
    was killed go at the start; all live in root's own folders (``private_dirs_command``),
    which a failed run on a fresh host takes away again (``lock_commands``).
    """
    uploads = ""
    if run_token:
        claim = [upload_path(download, run_token) for download in downloads]
        uploads = " ".join([*claim, FRESH_HOST_MARK.format(upload=claim[0])])
    steps = _install_lines(downloads, dest, run_token, retired)
    return (
        "\n".join(
            [
                *_install_prelude(dest, lock_wait),
                f"trap 'clean_up \"$work\" {uploads}' EXIT",
                *steps["fetch"],
                'make_dirs "$dest" || { echo "cannot create bin_dir $dest" >&2; exit 1; }',
                f'unpacked=$(mktemp -d "$dest/{TEMP_PREFIX}.XXXXXX" 2>/dev/null) || '
                '{ echo "bin_dir $dest is not writable: nothing was installed" >&2; exit 1; }',
                f'trap \'clean_up "$work" "$unpacked" {uploads}\' EXIT',
                *(line for part in INSTALL_PARTS for line in steps[part]),
            ]
        )
        + "\n"
    )


# The parts of ``install_script`` after the unpack folder is made, in their order.
INSTALL_PARTS = ("unpack", "intend", "place", "place_last", "record", "remember")


def _install_prelude(dest: str, lock_wait: int) -> list[str]:
    """The functions and variables of the install, the lock, and a fresh work folder."""
    return [
        "set -eu",
        "export LC_ALL=C",
        f"dest={shlex.quote(dest)}",
        _shell_variables(),
        _version_variables(),
        INSTALL_FUNCTIONS.strip(),
        *lock_commands(lock_wait),
        # What a killed earlier run left: under the lock, no other run's work is in progress,
        # and an upload waiting for the lock is younger than the stale ones.
        f'rm -rf {WORK_DIR}/* "$dest"/{TEMP_PREFIX}.*',
        f"find {UPLOAD_DIR} -type f -mmin +{STALE_MINUTES} -delete",
        f'work=$(mktemp -d {WORK_DIR}/XXXXXX) || {{ echo "cannot create a temporary folder" >&2; exit 1; }}',
    ]


def _install_lines(
    downloads: Sequence[Download], dest: str, run_token: str | None, retired: Sequence[Release]
) -> dict[str, list[str]]:
    """Each part of the install (``fetch``, then ``INSTALL_PARTS``): one line per archive, or per retired release."""
    quote = shlex.quote
    steps: dict[str, list[str]] = {part: [] for part in ("fetch", *INSTALL_PARTS)}
    for index, download in enumerate(downloads):
        release = download.release
        member_dir = quote(release.member_dir or ".")
        last = quote(" ".join(release.version_binaries))
        source = upload_path(download, run_token) if run_token else download.url
        steps["fetch"].append(f'fetch {quote(source)} "$work/{index}.tar.gz" {download.sha256}')
        steps["unpack"].append(f"unpack {quote(download.url)} {index} {member_dir} {last}")
        steps["intend"].append(f"intend {index} {quote(manifest_path(release.name, dest))}")
        steps["place"].append(f"place {index} {member_dir} {last}")
        steps["place_last"].append(f"place_last {index} {member_dir} {last}")
        steps["record"].append(f"record {index} {quote(manifest_path(release.name, dest))}")
        steps["remember"].append(f"remember_listed {index} {quote(' '.join(VERSIONED_BINARIES))}")
    for release in retired:
        steps["record"].append(
            f'for manifest in {shell_glob(manifest_glob(release.name))}; do retire "$manifest"; done'
        )
    return steps


# Ciphers that carry their own integrity check. On the default aes128-ctr with hmac-sha2-256,
# paramiko spends most of a large upload computing and checking one HMAC per 32 KB packet
# (one Python process serves every host): 10 hosts x 64 MB took 25 s there and 11 s on
# aes128-gcm, against 8-11 s for OpenSSH's own ssh (bench/fleet.py, docs/performance.md).
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _prefer_aead_cipher(state: State, host: Host) -> bool:
    """Before a large upload, re-key this host's SSH session onto AES-GCM when both ends allow it.

    Only the order of the ciphers the session already allows changes (what the operator
    disabled stays disabled); a host whose sshd offers no GCM keeps its cipher. Not an
    SSH connection (``@local``, ``@docker``): nothing to do.
    """
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None and hasattr(client, "get_transport") else None
    if transport is None or getattr(transport, "local_cipher", None) in AEAD_CIPHERS:
        return True
    options = transport.get_security_options()
    ciphers = tuple(options.ciphers)
    options.ciphers = tuple(c for c in ciphers if c in AEAD_CIPHERS) + tuple(
        c for c in ciphers if c not in AEAD_CIPHERS
    )
    transport.renegotiate_keys()
    return True


def _on_controller(state: State, host: Host, action: Callable[[], object], failure: type[Exception]) -> bool:
    """``action`` on the controller when the operation runs (never while planning): fetching an archive into the
    cache, writing the fleet's CA. A ``failure`` fails this host alone, in one line naming it."""
    try:
        action()
    except failure as error:
        host.log_styled(f"{host.name}: {error}", fg="red", log_func=logger.error)
        return False
    return True


@step_operation(lambda authority, unneeded, **_: unneeded if authority is None else None)
def fleet_ca(ca_dir: str, authority: Authority | None, unneeded: str) -> Generator[FunctionCommand, None, None]:
    """Write the fleet's CA, made in memory while planning (``certs.planned_ca``), into ``ca_dir`` on the controller.

    Every host of the run writes the same CA, the first one for real (``certs.save_ca``); a host
    fails here, before anything is sent to it, when ``ca_dir`` meanwhile got another CA.

    + ca_dir: ``buildkit_ca_dir``
    + authority: the CA the host's files are signed by; None: it is in ``ca_dir`` already (no change)
    + unneeded: the no-op's reason
    """
    if authority is not None:  # None: step_operation has made this step a no-op
        yield FunctionCommand(_on_controller, (partial(save_ca, ca_dir, authority), CertError), {})


@step_operation(lambda downloads, installed, **_: None if downloads else installed)
def release_files(
    downloads: Sequence[Download],
    dest: str,
    cache_dir: str | None = None,
    retired: Sequence[Release] = (),
    installed: str = "the wanted releases are installed",
    lock_wait: int = 600,
) -> Generator[str | FileUploadCommand | FunctionCommand, None, None]:
    """Install the files of every archive in ``downloads`` under ``dest`` in one verified step.

    + downloads: the archives that are not installed yet (see ``releases.resolve_download``)
    + dest: where their files go (``bin_dir``, or ``full_prefix`` for the full archive)
    + cache_dir: the controller's release cache: the controller fetches each archive there
      (once per fleet, when the operation runs) and uploads it, instead of the host downloading it
    + retired: releases of the other flavor, whose files to take away
    + installed: the no-op's reason when ``downloads`` is empty
    + lock_wait: how long to wait for another run of this package on the host, in seconds

    **Example:**

    .. code:: python

        release_files(downloads=[nerdctl_download], dest="/usr/local/bin")
    """
    run_token = None
    if cache_dir is not None:
        run_token = secrets.token_hex(8)
        # Every archive on the controller, verified, before anything reaches the host.
        for download in downloads:
            yield FunctionCommand(_on_controller, (partial(cached_archive, download, cache_dir), ReleaseError), {})
        uploads = [upload_path(download, run_token) for download in downloads]
        yield claim_uploads(uploads, lock_wait)
        yield FunctionCommand(_prefer_aead_cipher, (), {})
        take_back = take_back_uploads(uploads, lock_wait)
        for download, upload in zip(downloads, uploads, strict=True):
            yield ClaimedUploadCommand(str(cache_path(download, cache_dir)), upload, take_back)
    script = install_script(downloads, dest, run_token=run_token, retired=retired, lock_wait=lock_wait)
    yield naming_a_kill(script, f"the install into {dest}")


def remember_script(paths: Sequence[str], lock_wait: int = 600) -> str:
    """Record the versions of the installed binaries ``paths``, which the version facts had to execute."""
    return "\n".join(
        [
            "set -eu",
            "export LC_ALL=C",
            _version_variables(),
            VERSION_FUNCTIONS.strip(),
            *lock_commands(lock_wait),
            *(f"remember {shlex.quote(path)}" for path in paths),
            "",
        ]
    )


def removal_script(release: Release, dest: str, lock_wait: int = 600) -> str:
    """Remove the files ``release`` installed under ``dest``: those its manifest lists, nothing else.

    Folders left empty go too, if this package made them.
    """
    manifest = shlex.quote(manifest_path(release.name, dest))
    return "\n".join(
        [
            "set -eu",
            "export LC_ALL=C",
            _shell_variables(),
            DROP_FUNCTIONS.strip(),
            *lock_commands(lock_wait),
            f"if [ -f {manifest} ]; then drop_listed {manifest}; fi",
            f"rm -f {manifest}",
            "",
        ]
    )


@step_operation(
    lambda release, dest, installed_files, **_: (
        None if installed_files else f"no file list of {release.name} under {dest}: nothing of it is ours to remove"
    )
)
def remove_release_files(
    release: Release, dest: str, installed_files: list[str], lock_wait: int = 600
) -> Generator[str, None, None]:
    """Remove the files of ``release`` from under ``dest``.

    + release: which archive's files (``releases.NERDCTL``, ``releases.BUILDKIT``, ``releases.NERDCTL_FULL``)
    + dest: where they were installed (``bin_dir``, or ``full_prefix``)
    + installed_files: what the ``ReleaseFiles`` fact found in the release's manifest (nothing: no change)
    + lock_wait: how long to wait for another run of this package on the host, in seconds
    """
    yield removal_script(release, dest, lock_wait)


def diff_wanted() -> bool:
    """Whether the run shows ``--diff`` (pyinfra before 3.5 has no such option)."""
    return bool(getattr(host.state.config, "DIFF", False))


def show_diff(label: str, current: list[str] | None, content: str) -> None:
    """``--diff``: the change from ``current`` (its lines, None: no file) to ``content``, in pyinfra's style."""
    host.log(f"Will {'create' if current is None else 'modify'} {label}", logger.info)
    for line in generate_color_diff([f"{line}\n" for line in current or []], content.splitlines(keepends=True)):
        logger.info("  %s", line)
    logger.info("")


# How pyinfra runs a command as another user (``--sudo``, su, doas, dzdo), and the value that turns each off.
ELEVATION = {"_sudo": False, "_doas": False, "_dzdo": False, "_su_user": None}
SECRET_MODES = ("600", "400")


class PrivateUploadCommand(FileUploadCommand):
    """An upload no other user of the host can read on its way (a server key).

    As another user (``--sudo``), pyinfra uploads first as the login user to a temporary file
    in /tmp that the session's umask makes, usually readable by all, and copies it in from
    there. Here that file is made first, by the login user under ``umask 077``, and the upload
    fills it: an SFTP upload into an existing file keeps the file's mode.
    """

    def execute(self, state: State, host: Host, connector_arguments: ConnectorArguments) -> bool:
        arguments = {**connector_arguments, **self.connector_arguments}
        if any(arguments.get(key) for key in ELEVATION):
            as_login = {**arguments, **{key: off for key, off in ELEVATION.items() if key in arguments}}
            made, output = host.run_shell_command(StringCommand(private_temp_file()), **as_login)
            if not made or not output.stdout.strip().startswith("/"):
                logger.error(f"{host.name}: could not make a private temporary file for {self.dest}: {output.stderr}")
                return False
            self.remote_temp_filename = output.stdout.strip()
        return bool(super().execute(state, host, connector_arguments))


@step_operation(lambda path, content, **_: f"{path} is as wanted" if content is None else None)
def write_file(path: str, content: str | None, mode: str = "644") -> Generator[str | FileUploadCommand, None, None]:
    """Write ``content`` to ``path`` as ``root:root`` ``mode``, atomically; ``None``: nothing to write.

    The caller has decided from one fact that the file differs; unlike ``files.put`` this
    reads no state (but the current content with ``--diff``). Uploaded beside ``path``,
    given its owner and mode, then renamed over it, so no reader ever sees a partial
    file or a moment of wrong permissions.

    .. code:: python

        write_file(path="/etc/nerdctl/nerdctl.toml", content='namespace = "default"\\n')
    """
    assert content is not None  # idle otherwise: step_operation does not run the body
    if diff_wanted():
        # Imported here: pyinfra before 3.5 has neither FileContents nor --diff, and must still load this module.
        from pyinfra.facts.files import FileContents

        show_diff(path, host.get_fact(FileContents, path=path), content)
    # A name of its own per run (two runs at once), in a root-owned folder.
    temp = f"{path}.{TEMP_PREFIX.lstrip('.')}-{secrets.token_hex(4)}.tmp"
    upload = PrivateUploadCommand if mode in SECRET_MODES else FileUploadCommand
    yield upload(StringIO(content), temp)
    yield replace_file(temp, path, mode)


@step_operation(lambda path, needed, **_: None if needed else f"{path} is as wanted")
def root_directory(path: str, needed: bool, mode: str = "755") -> Generator[str, None, None]:
    """``path`` as a ``root:root`` ``mode`` folder when ``needed`` (the caller found it missing or wrong).

    .. code:: python

        root_directory(path="/etc/buildkit", needed=True)
    """
    yield root_directory_command(path, mode)


@step_operation(lambda commands, unneeded, **_: None if commands else unneeded)
def run_commands(commands: Sequence[str], unneeded: str, lock_wait: int | None = None) -> Generator[str, None, None]:
    """Run ``commands``, decided from one fact; none is a no-op saying why (``unneeded``).

    Used where pyinfra's own operation would read the state again (``systemd.service``,
    ``server.group``), which would cost a converged host more than its one fact.
    With ``lock_wait``, they run as one script under the host's lock (``locked``).

    .. code:: python

        run_commands(commands=["systemctl enable buildkit.socket"], unneeded="buildkit.socket is enabled")
    """
    if lock_wait is None:
        yield from commands
    else:
        yield locked(commands, lock_wait)
