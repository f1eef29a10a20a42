"""The one-line host commands the deploys' steps run, built in one place that tests/test_shell.py checks in full.

Longer shell lives in the ``.sh`` files beside this module; these are the commands the
planners put into steps (``steps.Step``): units, files, folders, and a rootless user's.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from ..facts.rootless import marker_path, user_runtime_env
from ..layout import (
    FRESH_HOST_MARK,
    LOCK_FILE,
    ROOTLESS_STATE_DIR,
    STATE_DIR,
    SUBID_FILES,
    UPLOAD_DIR,
    WORK_DIR,
)


def groupadd(group: str) -> str:
    return f"groupadd --system {shlex.quote(group)}"


def systemctl(*arguments: str) -> str:
    """``systemctl`` with ``arguments`` (unit names are ours: no quoting needed, but quoted all the same)."""
    return " ".join(["systemctl", *(shlex.quote(argument) for argument in arguments)])


def reset_failed(*units: str) -> str:
    """Forget that ``units`` failed (buildkitd exits 1 on SIGTERM); never fails."""
    return f"{systemctl('reset-failed', *units)} 2>/dev/null || true"


def stop_buildkitd_process(pid: int, seconds: int) -> str:
    """Stop a buildkitd that no unit runs (started by hand), if that pid is still a buildkitd, and wait for it."""
    status = f"/proc/{pid}/status"
    return (
        f"if grep -qx 'Name:.buildkitd' {status} 2>/dev/null; then kill {pid}; "
        f"timeout {seconds} sh -c 'while [ -e {status} ]; do sleep 0.2; done' || "
        f'{{ echo "buildkitd process {pid} did not stop within {seconds} s" >&2; exit 1; }}; fi'
    )


def private_temp_file() -> str:
    """A new empty file that only its owner can read; prints its path."""
    return "umask 077 && mktemp"


def remove_file(path: str) -> str:
    return f"rm -f {shlex.quote(path)}"


def remove_tree(path: str) -> str:
    return f"rm -rf {shlex.quote(path)}"


def remove_if_empty(directory: str) -> str:
    return f"rmdir {shlex.quote(directory)} 2>/dev/null || true"


def root_directory(path: str, mode: str) -> str:
    quoted = shlex.quote(path)
    return f"mkdir -p {quoted} && chown root:root {quoted} && chmod {mode} {quoted}"


def root_owned(path: str, mode: str) -> str:
    quoted = shlex.quote(path)
    return f"chown root:root {quoted} && chmod {mode} {quoted}"


def replace_file(temp: str, path: str, mode: str) -> str:
    """Give the uploaded ``temp`` its owner and mode, then rename it over ``path``.

    The same content from a run that came first: keep the file, and the units' view of it.
    """
    quoted, quoted_temp = shlex.quote(path), shlex.quote(temp)
    return (
        f"{root_owned(temp, mode)} && "
        f'if cmp -s {quoted_temp} {quoted} && [ "$(stat -c %a:%U:%G {quoted})" = {mode}:root:root ]; '
        f"then rm -f {quoted_temp}; else mv -f {quoted_temp} {quoted}; fi"
    )


def as_user(user: str, uid: int, command: str) -> str:
    """``command`` (a shell string) run as ``user``, able to reach the user's systemd manager."""
    return f"runuser -u {shlex.quote(user)} -- env {user_runtime_env(str(uid))} sh -c {shlex.quote(command)}"


def user_systemctl(user: str, uid: int, arguments: str) -> str:
    return as_user(user, uid, f"systemctl --user {arguments}")


def user_write(path: str, temp: str) -> str:
    """As the user: standard input into ``path`` (0644) through ``temp``; the same content keeps the file (its ctime)."""
    path, temp = shlex.quote(path), shlex.quote(temp)
    return (
        f'umask 022 && mkdir -p "$(dirname {path})" && cat > {temp} && chmod 644 {temp} && '
        f"if cmp -s {temp} {path}; then rm -f {temp}; else mv -f {temp} {path}; fi"
    )


def user_upload_write(user: str, uid: int, upload: str, write: str, lock_wait: int) -> str:
    """Run ``write`` as the user on the root-owned ``upload`` (claimed by ``claim_uploads``), under the host's lock;
    the upload and its run's mark go whatever happens, and on a fresh host a failure takes root's folders back.

    In a subshell, so that the upload goes whether or not the lock was had.
    """
    claim = f"{upload} {FRESH_HOST_MARK.format(upload=upload)}"
    write_as_user = f"{as_user(user, uid, write)} < {upload}"
    script = locked([f"trap 'clean_up {claim}' EXIT", f"chmod 600 {upload}", write_as_user], lock_wait)
    return f"( {script} ); status=$?; rm -f {claim}; exit $status"


def mark(user: str, what: str, content: str = "") -> str:
    """Record that this package turned ``what`` on for ``user`` (with ``content``)."""
    return f"mkdir -p {ROOTLESS_STATE_DIR} && echo {shlex.quote(content)} > {shlex.quote(marker_path(user, what))}"


def unmark(user: str, what: str) -> str:
    return f"rm -f {shlex.quote(marker_path(user, what))} && rmdir --ignore-fail-on-non-empty {ROOTLESS_STATE_DIR}"


def add_subids(user: str, kind: str, first_last: str) -> str:
    """Under the lock, a range another run added first is not added again."""
    quoted = shlex.quote(user)
    return f"grep -q ^{quoted}: {SUBID_FILES[kind]} || usermod --add-sub{kind}s {first_last} {quoted}"


def delete_subids(user: str, ranges: Sequence[str]) -> str:
    return f"usermod {' '.join(ranges)} {shlex.quote(user)}"


def linger(user: str, on: bool) -> str:
    return f"loginctl {'enable' if on else 'disable'}-linger {shlex.quote(user)}"


def remove_user_files(paths: Sequence[str], good: str, folders: Sequence[str]) -> str:
    """As the user: ``paths`` and the copies under ``good`` go, then the folders left empty; never fails."""
    good = shlex.quote(good)
    return (
        f"rm -rf {' '.join(map(shlex.quote, paths))} {good} && "
        f"rmdir --ignore-fail-on-non-empty {' '.join(map(shlex.quote, folders))} "
        f'"$(dirname {good})" 2>/dev/null; true'
    )


def purge_user_data(rootlesskit: str, paths: Sequence[str]) -> str:
    """As the user: images belong to the user's subordinate IDs, so only RootlessKit's namespace may remove them."""
    return f"{rootlesskit} rm -rf {' '.join(map(shlex.quote, paths))}"


def private_dirs_command() -> str:
    """Root-only folders for this package's file lists, work and uploads (never a world-writable one)."""
    return f"install -d -m 700 -o root -g root {STATE_DIR} {WORK_DIR} {UPLOAD_DIR}"


def open_lock() -> str:
    """Open the host's lock on file descriptor 9, made first if need be: mode 0600, so that no other user can hold it."""
    return f"(umask 077 && : >>{LOCK_FILE}) && exec 9>>{LOCK_FILE}"


def lock_commands(wait_seconds: int) -> list[str]:
    """Hold this host's lock until the script ends: one install, removal or check at a time, the others wait.

    Root's own folders are made once the lock is held. The EXIT trap ``clean_up PATHS`` removes a
    script's temporary PATHS and, when the script fails on a fresh host, root's folders too if they
    hold nothing else (another run's upload or installed files keep them): the host stays as it was.
    A fresh host is one found without them, or with the mark of a run in flight that found it so
    (``claim_uploads``).
    """
    marks = FRESH_HOST_MARK.format(upload=f"{UPLOAD_DIR}/*")
    return [
        f'{{ {open_lock()}; }} || {{ echo "cannot create {LOCK_FILE}" >&2; exit 1; }}',
        f'flock -w {wait_seconds} 9 || {{ echo "another pyinfra-nerdctl run on this host held {LOCK_FILE} '
        f'for {wait_seconds} s (host_lock_wait): nothing was changed; run again when it has finished" >&2; exit 1; }}',
        f"fresh_host=$([ -d {STATE_DIR} ] && ! ls {marks} >/dev/null 2>&1 || echo yes)",
        "# shellcheck disable=SC2317  # clean_up runs as the EXIT trap, which shellcheck does not follow",
        'clean_up() { status=$?; rm -rf "$@"; if [ "$status" -ne 0 ] && [ -n "$fresh_host" ] && '
        f"! find {STATE_DIR} -mindepth 1 ! -path {WORK_DIR} ! -path {UPLOAD_DIR} 2>/dev/null | grep -q .; then "
        f"rmdir {WORK_DIR} {UPLOAD_DIR} {STATE_DIR} 2>/dev/null || true; fi; }}",
        "trap clean_up EXIT",
        f'{private_dirs_command()} || {{ echo "cannot create {STATE_DIR}" >&2; exit 1; }}',
    ]


def claim_uploads(uploads: Sequence[str], wait_seconds: int) -> str:
    """Before a run's ``uploads``, under the host's lock: root's folders, the upload names taken, and on a fresh host
    the run's mark (``layout.FRESH_HOST_MARK``), so that a failing run takes the folders back only once none holds a claim.
    """
    quoted = " ".join(map(shlex.quote, uploads))
    mark = shlex.quote(FRESH_HOST_MARK.format(upload=uploads[0]))
    return locked([f"touch {quoted}", f'if [ -n "$fresh_host" ]; then touch {mark}; fi'], wait_seconds)


def take_back_uploads(uploads: Sequence[str], wait_seconds: int) -> str:
    """After a run's upload failed: its ``uploads`` and mark go, and on a fresh host root's folders (``lock_commands``)."""
    claim = " ".join(map(shlex.quote, [*uploads, FRESH_HOST_MARK.format(upload=uploads[0])]))
    # The run has failed: the trap's clean_up sees a failure.
    return "\n".join([*lock_commands(wait_seconds), f"trap {shlex.quote('clean_up ' + claim)} EXIT", "exit 1", ""])


def locked(commands: Sequence[str], wait_seconds: int) -> str:
    """``commands`` as one script under the host's lock (``lock_commands``), stopping at the first that fails."""
    return "\n".join([*lock_commands(wait_seconds), "set -e", *commands]) + "\n"


def leftovers_script(paths: Sequence[str]) -> str:
    """Remove ``paths``, what killed runs left (``BuildHostState``'s ``leftovers``), while no run holds the lock.

    Never waits and never fails a run: when another run holds the lock, they stay for a later run.
    """
    quoted = " ".join(shlex.quote(path) for path in paths)
    return (
        f"{open_lock()} && "
        f"if flock -n 9; then rm -rf -- {quoted}; "
        f'else echo "another pyinfra-nerdctl run holds {LOCK_FILE}: what killed runs left stays for a later run"; fi'
    )


def naming_a_kill(script: str, what: str) -> str:
    """``script`` in a shell of its own, and one line naming the signal when that shell is killed (an OOM kill,
    a ``kill -9``), where pyinfra alone says only "executed 0 commands"."""
    return (
        f"sh -c {shlex.quote(script)}; status=$?; "
        'if [ "$status" -gt 128 ]; then '
        f'echo "{what} was killed by signal $(kill -l "$status" 2>/dev/null || echo $((status - 128))): the files it '
        'had not moved yet keep their old version, and what it left goes on a later run; run again" >&2; fi; '
        'exit "$status"'
    )
