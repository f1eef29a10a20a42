"""Rootless build hosts: one user's own containerd and BuildKit, as that user's systemd services.

Decided from one ``RootlessState`` fact (see ``rootless_plan``); files in the user's
home are written as the user (``runuser``), never as root, so a link the user planted
there cannot redirect a write.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, deploy, operation
from pyinfra.operations import apt

from ..facts.rootless import RootlessState, UserFileContents
from ..facts.types import RootlessStateDict
from ..layout import TEMP_PREFIX, UPLOAD_DIR
from .build_host import fail, host_settings, read_state
from .commands import claim_uploads, take_back_uploads, user_upload_write, user_write
from .operations import ClaimedUploadCommand, diff_wanted, show_diff
from .rootless_plan import (
    RootlessError,
    plan_rootless,
    plan_rootless_removal,
    rootless_steps,
    split_overrides,
)
from .settings import RootlessSettings, SettingError, Settings, resolve_rootless_settings
from .steps import OPERATIONS, Step, carry_out, held_lock_wait


def _settings(overrides: dict[str, Any]) -> tuple[Settings, RootlessSettings]:
    rootless_overrides, build_overrides = split_overrides(overrides)
    settings = host_settings(build_overrides)
    try:
        return settings, resolve_rootless_settings(host.data.get, rootless_overrides)
    except SettingError as error:
        raise fail(str(error)) from error


def _state(settings: Settings, rootless: RootlessSettings) -> RootlessStateDict | None:
    """The one ``RootlessState`` fact the rootless deploys read (``read_state``)."""
    return read_state(
        RootlessState,
        user=rootless.user,
        bin_dir=settings.bin_dir,
        namespace=rootless.namespace,
        full_prefix=settings.full_prefix,
    )


@operation()
def user_file(
    user: str, uid: int, home: str, relative: str, content: str | None, lock_wait: int = 600
) -> Generator[str | FileUploadCommand, None, None]:
    """Write ``content`` to ``relative`` under ``home`` as ``user`` (0644), atomically; ``None``: nothing to write.

    The caller has decided from one fact that the file differs; with ``--diff`` the current
    content is read, as the user. Uploaded as root to a private temporary file in a root-only
    folder, then copied into place by the user (``runuser``), so the write has exactly the
    user's own rights; under the host's lock, waiting at most ``lock_wait`` seconds.

    .. code:: python

        user_file(user="alice", uid=1001, home="/home/alice", relative=".config/nerdctl/nerdctl.toml",
                  content='namespace = "default"\\n')
    """
    if content is None:
        host.noop(f"~{user}/{relative} is as wanted")
        return
    if diff_wanted():
        show_diff(f"~{user}/{relative}", host.get_fact(UserFileContents, user=user, path=f"{home}/{relative}"), content)
    # Root's own upload folder (a link in /tmp, planted by a user, could redirect root's upload), a name per run.
    upload = f"{UPLOAD_DIR}/{TEMP_PREFIX.lstrip('.')}-user.{uid}.{secrets.token_hex(4)}"
    yield claim_uploads([upload], lock_wait)
    temp = f"{home}/{relative}.{TEMP_PREFIX.lstrip('.')}-{secrets.token_hex(4)}.tmp"
    yield ClaimedUploadCommand(StringIO(content), upload, take_back_uploads([upload], lock_wait))
    yield user_upload_write(user, uid, upload, user_write(f"{home}/{relative}", temp), lock_wait)


def _packages(step: Step) -> None:
    """The missing distribution packages, with pyinfra's own operation; a no-op (reading nothing) otherwise."""
    install = apt.packages if step.options["packages"] else _no_packages
    install(
        name=step.name,
        packages=list(step.options["packages"]),
        update=True,
        cache_time=3600,
        no_recommends=True,
    )


@operation()
def _no_packages(packages: list[str], update: bool, cache_time: int, no_recommends: bool) -> Generator[str, None, None]:
    host.noop("the programs rootless containerd needs are installed")
    yield from ()


def _user_file(step: Step) -> None:
    user_file(name=step.name, lock_wait=held_lock_wait(step), **step.options)


# The rootless deploys' steps are not a fixed sequence (apt's operation is not a step operation):
# every step is called on every host, each at its own position of one loop (``host.loop``).
ROOTLESS_OPERATIONS = {**OPERATIONS, "packages": _packages, "user_file": _user_file}


@deploy("Install rootless containerd and BuildKit for a user")
def install_rootless(**settings: Any) -> None:
    """One existing user's own rootless containerd and socket-activated BuildKit, started at boot.

    The binaries are the build host's (``install_build_host`` first); RootlessKit, slirp4netns
    and newuidmap come from the distribution (``rootless_packages``) or the full archive.
    Every prerequisite is checked before anything changes.

    .. code:: python

        install_rootless(rootless_user="alice", rootless_network="host")
    """
    resolved, rootless = _settings(settings)
    state = _state(resolved, rootless)
    if state is None:
        return
    try:
        changes = plan_rootless(resolved, rootless, state)
    except RootlessError as error:
        raise fail(str(error)) from error
    carry_out(host.loop(rootless_steps(resolved, rootless, state, changes)), ROOTLESS_OPERATIONS)


@deploy("Remove rootless containerd and BuildKit of a user")
def remove_rootless(purge: bool = False, **settings: Any) -> None:
    """The user's units stopped and removed, configs gone, lingering off if this package turned it on.

    The user's images and build cache stay unless ``purge``; with ``purge`` the
    subordinate ID range this package added goes too.

    .. code:: python

        remove_rootless(rootless_user="alice", purge=True)
    """
    resolved, rootless = _settings(settings)
    state = _state(resolved, rootless)
    if state is None:
        return
    carry_out(host.loop(plan_rootless_removal(resolved, rootless, state, purge)), ROOTLESS_OPERATIONS)
