"""Remote builders (issue 23), without a host: the CA, certificates and their renewal, the settings, the plans."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from functools import partial
from io import StringIO
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyinfra_nerdctl import certs, layout
from pyinfra_nerdctl.deploys import rendering
from pyinfra_nerdctl.deploys.build_plan import install_steps, removal_steps
from pyinfra_nerdctl.deploys.changes import plan_changes, plan_removal
from pyinfra_nerdctl.deploys.operations import PrivateUploadCommand, _on_controller
from pyinfra_nerdctl.deploys.releases import BUILDKIT, NERDCTL, NERDCTL_FULL
from pyinfra_nerdctl.deploys.remote import replacement_reason, server_names, tls_files
from pyinfra_nerdctl.deploys.settings import SettingError, resolve_settings
from pyinfra_nerdctl.deploys.takeover import plan_takeover
from pyinfra_nerdctl.facts.state import parse_tls_cert, tls_cert_command
from states import converged_state

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
NAMES = ("127.0.0.5", "build-1")
MINIMAL = (NERDCTL, BUILDKIT)
ALL = (NERDCTL, BUILDKIT, NERDCTL_FULL)


@pytest.fixture
def authority(tmp_path) -> certs.Authority:
    return certs.load_or_create_ca(str(tmp_path / "ca"), now=NOW)


def remote_settings(tmp_path, **values):
    return resolve_settings(
        {}.get, {"buildkit_remote_address": "127.0.0.5:1234", "buildkit_ca_dir": str(tmp_path / "ca"), **values}
    )


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_ca_is_made_once_root_only_and_reused(tmp_path, authority):
    folder = tmp_path / "ca"
    assert (mode_of(folder), mode_of(folder / certs.CA_KEY)) == (0o700, 0o600)
    assert certs.load_or_create_ca(str(folder)).cert_pem == authority.cert_pem


def test_a_ca_folder_that_cannot_be_made_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(certs.CertError, match=r"^buildkit_ca_dir='.*/file/ca': cannot read or create the CA there"):
        certs.load_or_create_ca(str(tmp_path / "file" / "ca"))


def test_planning_writes_no_ca_and_every_plan_of_the_process_gets_the_same_new_one(tmp_path):
    folder = tmp_path / "config" / "ca"
    planned = certs.planned_ca(str(folder), now=NOW)
    assert not planned.saved and not (tmp_path / "config").exists()
    (tmp_path / "link").symlink_to(tmp_path / "config")
    assert certs.planned_ca(str(folder)) is planned
    assert certs.planned_ca(str(tmp_path / "link" / "ca")) is planned  # the same folder by another path
    assert certs.planned_ca(str(tmp_path / "other")).cert_pem != planned.cert_pem
    assert not (tmp_path / "config").exists()


def test_saving_writes_the_planned_ca_once_root_only_and_a_rerun_reads_it(tmp_path):
    folder = tmp_path / "ca"
    planned = certs.planned_ca(str(folder), now=NOW)
    certs.save_ca(str(folder), planned)
    certs.save_ca(str(folder), planned)  # another host of the same run: the same CA, nothing to do
    # No temporary file is left.
    assert sorted(path.name for path in folder.iterdir()) == sorted([".lock", certs.CA_CERT, certs.CA_KEY])
    assert (mode_of(folder), mode_of(folder / certs.CA_KEY)) == (0o700, 0o600)
    again = certs.planned_ca(str(folder))
    assert again.saved and again.cert_pem == planned.cert_pem
    assert again.key.private_numbers() == planned.key.private_numbers()


def test_a_folder_that_got_another_ca_meanwhile_fails_the_save_and_keeps_its_ca(tmp_path):
    folder = tmp_path / "ca"
    theirs = certs.load_or_create_ca(str(folder), now=NOW)
    ours = certs.new_authority(NOW)
    with pytest.raises(certs.CertError, match=r"^buildkit_ca_dir='.*/ca' holds another CA than the one this run"):
        certs.save_ca(str(folder), ours)
    assert (folder / certs.CA_CERT).read_text() == theirs.cert_pem


def _race(monkeypatch, folder, authorities) -> list[str]:
    """``save_ca`` of each of ``authorities`` at once, each writer slow between reading and writing the folder."""
    read = certs._read_ca

    def slow_read(*arguments):
        found = read(*arguments)
        time.sleep(0.2)  # without the lock, both writers would find no CA here
        return found

    monkeypatch.setattr(certs, "_read_ca", slow_read)
    start = threading.Barrier(len(authorities))
    outcomes = [""] * len(authorities)

    def save(index: int) -> None:
        start.wait()
        try:
            certs.save_ca(str(folder), authorities[index])
            outcomes[index] = "saved"
        except certs.CertError as error:
            outcomes[index] = str(error)

    threads = [threading.Thread(target=save, args=(index,)) for index in range(len(authorities))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_of_two_writers_at_once_of_different_cas_one_wins_and_the_other_fails_clearly(tmp_path, monkeypatch):
    folder = tmp_path / "ca"
    authorities = [certs.new_authority(NOW), certs.new_authority(NOW)]
    outcomes = _race(monkeypatch, folder, authorities)
    assert sorted(outcome == "saved" for outcome in outcomes) == [False, True]
    winner = authorities[outcomes.index("saved")]
    assert (folder / certs.CA_CERT).read_text() == winner.cert_pem
    assert "holds another CA than the one this run planned with" in next(o for o in outcomes if o != "saved")


def test_two_writers_at_once_of_the_same_ca_both_go_on(tmp_path, monkeypatch):
    folder = tmp_path / "ca"
    planned = certs.planned_ca(str(folder), now=NOW)
    assert _race(monkeypatch, folder, [planned, planned]) == ["saved", "saved"]
    assert (folder / certs.CA_CERT).read_text() == planned.cert_pem


def test_the_step_that_writes_a_new_ca_fails_the_host_with_one_line_naming_the_folder(tmp_path, caplog):
    folder = tmp_path / "ca"
    certs.load_or_create_ca(str(folder), now=NOW)
    host = SimpleNamespace(name="build-1", log_styled=lambda message, log_func, **_: log_func(message))
    assert not _on_controller(
        None, host, partial(certs.save_ca, str(folder), certs.new_authority(NOW)), certs.CertError
    )
    assert [record.getMessage() for record in caplog.records] == [
        f"build-1: buildkit_ca_dir={str(folder)!r} holds another CA than the one this run planned with "
        "(made meanwhile by another run): nothing was sent to the host; run again"
    ]
    assert _on_controller(
        None, host, partial(certs.save_ca, str(tmp_path / "new"), certs.new_authority(NOW)), certs.CertError
    )
    assert (tmp_path / "new" / certs.CA_KEY).exists()


def test_a_new_ca_is_written_by_the_first_step_and_a_saved_one_by_none(tmp_path):
    settings = remote_settings(tmp_path)
    state = _state(settings)
    planned = certs.planned_ca(settings.buildkit_ca_dir, now=NOW)
    name = f"Create the fleet's CA in {tmp_path / 'ca'} on the controller"
    first = _steps(settings, state, planned)[1][name]
    assert (first.kind, first.options["authority"]) == ("ca", planned)
    assert list(_steps(settings, state, planned)[1]).index(name) == 0
    certs.save_ca(settings.buildkit_ca_dir, planned)
    saved = _steps(settings, state, certs.planned_ca(settings.buildkit_ca_dir))[1][name]
    assert (saved.options["authority"], saved.unneeded) == (None, f"the fleet's CA is in {tmp_path / 'ca'}")
    off = resolve_settings({}.get, {"buildkit_ca_dir": str(tmp_path / "ca")})
    assert _steps(off, state, None)[1][name].unneeded == "no buildkit_remote_address: no CA is needed"


def test_a_fresh_server_certificate_serves_until_close_to_its_end(authority):
    cert_pem, _ = certs.issue(authority, "build-1", NAMES, server=True, now=NOW)
    assert certs.renewal_reason(cert_pem, authority.cert_pem, NAMES, NOW) is None
    assert certs.renewal_reason(cert_pem, authority.cert_pem, reversed(NAMES), NOW) is None  # order: no matter
    late = NOW + timedelta(days=certs.ISSUED_DAYS) - certs.RENEW_MARGIN
    assert "within 30 days" in certs.renewal_reason(cert_pem, authority.cert_pem, NAMES, late)
    assert certs.renewal_reason(cert_pem, authority.cert_pem, NAMES, late - timedelta(days=1)) is None


def test_a_server_certificate_is_replaced_for_other_names_another_ca_or_none(tmp_path, authority):
    cert_pem, _ = certs.issue(authority, "build-1", NAMES, server=True, now=NOW)
    other = certs.load_or_create_ca(str(tmp_path / "other"), now=NOW)
    assert certs.renewal_reason(cert_pem, authority.cert_pem, (*NAMES, "b.example"), NOW) == (
        "the server certificate names 127.0.0.5, build-1, not 127.0.0.5, b.example, build-1"
    )
    assert (
        certs.renewal_reason(cert_pem, other.cert_pem, NAMES, NOW) == "the server certificate is signed by another CA"
    )
    assert certs.renewal_reason(None, authority.cert_pem, NAMES, NOW) == "no server certificate yet"
    assert certs.renewal_reason("garbage", authority.cert_pem, NAMES, NOW) == "the server certificate cannot be read"


def test_the_client_command_writes_a_client_certificate_of_the_ca(tmp_path, capsys):
    assert certs.main(["client", "ci-runner", "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert sorted(path.name for path in out.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert mode_of(out / "key.pem") == 0o600
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((out / "ca.pem").read_bytes()))
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (tmp_path / "ca" / certs.CA_KEY).exists()


@pytest.mark.parametrize(
    "value", ["1234", "build-1:1234", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "::1:1234", "tcp://1.2.3.4:1"]
)
def test_a_malformed_remote_address_is_refused_naming_the_setting(tmp_path, value):
    with pytest.raises(SettingError) as refused:
        remote_settings(tmp_path, buildkit_remote_address=value)
    assert str(refused.value) == (
        f"buildkit_remote_address={value!r} is neither IP:PORT nor :PORT (e.g. 10.0.0.5:1234 or :1234)"
    )


def test_remote_addresses_and_names_are_normalised(tmp_path):
    assert remote_settings(tmp_path, buildkit_remote_address="[::1]:01234").buildkit_remote_address == "[::1]:1234"
    assert remote_settings(tmp_path, buildkit_remote_address=":1234").buildkit_remote_address == ":1234"
    assert remote_settings(tmp_path, buildkit_remote_names="a.example, 10.0.0.7").buildkit_remote_names == (
        "a.example",
        "10.0.0.7",
    )
    with pytest.raises(SettingError, match=r"^buildkit_remote_names='a b': 'a b' is neither a DNS name nor an IP"):
        remote_settings(tmp_path, buildkit_remote_names="a b")


def test_an_unwritable_ca_dir_is_refused_only_when_remote_is_on(tmp_path):
    (tmp_path / "file").write_text("")
    unwritable = str(tmp_path / "file" / "ca")
    with pytest.raises(SettingError, match=r"^buildkit_ca_dir='.*/file/ca' is not writable on the controller"):
        remote_settings(tmp_path, buildkit_ca_dir=unwritable)
    assert resolve_settings({}.get, {"buildkit_ca_dir": unwritable}).buildkit_ca_dir == unwritable
    assert not (tmp_path / "ca").exists()  # a check makes nothing


def test_server_names_leave_out_what_a_certificate_cannot_carry(tmp_path):
    every_address = remote_settings(tmp_path, buildkit_remote_address="0.0.0.0:1234")
    assert server_names(every_address, "@local", None) == ()
    assert server_names(remote_settings(tmp_path), "Build-1", "127.0.0.5") == NAMES


def test_the_service_unit_of_a_remote_builder_listens_on_tcp_with_tls_and_starts_at_boot(tmp_path):
    unit = rendering.buildkit_service_unit(remote_settings(tmp_path))
    assert (
        "--addr fd:// --addr tcp://127.0.0.5:1234 --tlscacert /etc/buildkit/tls/ca.pem "
        "--tlscert /etc/buildkit/tls/server.pem --tlskey /etc/buildkit/tls/server.pem --config"
    ) in unit
    assert unit.endswith("[Install]\nWantedBy=multi-user.target\n")
    plain = rendering.buildkit_service_unit(resolve_settings({}.get, {}))
    assert "tcp://" not in plain and "[Install]" not in plain


def _state(settings, **changes):
    state = converged_state(settings)
    state["paths"][settings.containerd_socket] = {"kind": "socket"}
    return {**state, "leftovers": [], "foreign_buildkit": {"units": [], "processes": []}, "tls_cert": None, **changes}


def _steps(settings, state, authority):
    files, _ = tls_files(settings, state, authority, NAMES, NOW)
    takeover = plan_takeover(state, settings.buildkit_takeover)
    changes = plan_changes(settings, takeover.state, MINIMAL, tls=files)
    steps = install_steps(settings, state, changes, takeover, MINIMAL, ALL, (NERDCTL_FULL,), [], authority)
    return changes, {step.name: step for step in steps}


def fact_lines(content: str) -> list[str]:
    """What ``tls_cert_command`` prints for a file holding ``content`` (its own sed, run here)."""
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as handle:
        handle.write(content)
        handle.flush()
        printed = subprocess.run(
            ["sh", "-c", tls_cert_command(handle.name)], capture_output=True, text=True, check=True
        )
    return printed.stdout.splitlines()


def test_the_fact_reads_the_certificate_and_never_the_key_beside_it(tmp_path, authority):
    settings = remote_settings(tmp_path)
    files, _ = tls_files(settings, _state(settings), authority, NAMES, NOW)
    server = next(file.content for file in files if file.path == layout.TLS_SERVER)
    lines = fact_lines(server)
    assert lines[0] == "tls_cert=-----BEGIN CERTIFICATE-----" and lines[-1] == "tls_cert=-----END CERTIFICATE-----"
    assert not any("PRIVATE" in line or "Managed" in line for line in lines)
    assert certs.renewal_reason(parse_tls_cert(lines), authority.cert_pem, NAMES, NOW) is None


def remote_converged(settings, authority):
    """A remote builder as a run leaves it: TLS files in place (as the fact reads them), the service enabled."""
    state = _state(settings)
    files, _ = tls_files(settings, state, authority, NAMES, NOW)
    for file in files:
        state["paths"][file.path] = {**state["paths"][layout.BUILDKIT_CONFIG], "sha256": file.sha256, "mode": file.mode}
    state["paths"][layout.BUILDKIT_TLS_DIR] = {**state["paths"][layout.BUILDKIT_CONFIG_DIR], "mode": "700"}
    server = next(file.content for file in files if file.path == layout.TLS_SERVER)
    state["tls_cert"] = parse_tls_cert(fact_lines(server))
    state["units"]["service"]["enabled"] = True
    return state


def test_turning_remote_on_writes_the_tls_files_root_only_and_starts_the_service_for_good(tmp_path, authority):
    settings = remote_settings(tmp_path)
    changes, steps = _steps(settings, _state(settings, units={**_state(settings)["units"]}), authority)

    assert {file.path: file.mode for file in changes.files if file.path.startswith(layout.BUILDKIT_TLS_DIR)} == {
        layout.TLS_CA: "644",
        layout.TLS_SERVER: "600",
    }
    assert steps["Directory /etc/buildkit/tls"].options["mode"] == "700"
    server = steps["Write /etc/buildkit/tls/server.pem"].options
    assert server["mode"] == "600"
    assert server["content"].index("BEGIN CERTIFICATE") < server["content"].index("BEGIN PRIVATE KEY")
    assert "PRIVATE" not in steps["Write /etc/buildkit/tls/ca.pem"].options["content"]  # the CA's key stays here
    assert steps["Enable buildkit.service"].commands == ("systemctl enable buildkit.service",)
    # The running service restarts onto the new unit and files, its builds waited for first.
    assert (
        steps["Restart buildkit.service"].commands
        and steps["Wait for the builds in flight on buildkit.service"].commands
    )
    # The check leaves a remote builder's service running.
    assert "stop_after=no" in steps["Check that BuildKit answers with the containerd worker"].commands[0]


def test_a_converged_remote_builder_has_nothing_to_do(tmp_path, authority):
    settings = remote_settings(tmp_path)
    state = remote_converged(settings, authority)
    assert replacement_reason(state, authority.cert_pem, NAMES, NOW) is None
    changes, steps = _steps(settings, state, authority)
    assert [name for name, step in steps.items() if step.commands or step.options.get("content")] == []


def test_a_renewal_writes_a_new_pair_and_restarts_the_drained_way(tmp_path, authority):
    settings = remote_settings(tmp_path)
    state = remote_converged(settings, authority)
    late = NOW + timedelta(days=340)
    files, reason = tls_files(settings, state, authority, NAMES, late)
    assert "within 30 days" in reason
    changes = plan_changes(settings, state, MINIMAL, tls=files)
    assert {file.path for file in changes.files} == {layout.TLS_SERVER}
    assert changes.restart_service and changes.wait_for_builds
    # A key that is not root's own is replaced with its certificate.
    state["paths"][layout.TLS_SERVER]["mode"] = "644"
    assert replacement_reason(state, authority.cert_pem, NAMES, NOW) == (
        "/etc/buildkit/tls/server.pem is not a root:root 600 file"
    )


def test_turning_remote_off_closes_the_port_drained_disables_and_then_removes_the_tls_files(tmp_path, authority):
    settings = remote_settings(tmp_path)
    state = remote_converged(settings, authority)
    off = resolve_settings({}.get, {})
    changes, steps = _steps(off, state, authority)
    assert changes.restart_service and changes.wait_for_builds
    assert steps["Disable buildkit.service"].commands == ("systemctl disable buildkit.service",)
    assert steps["Remove the server's TLS files"].commands == (
        "rm -f /etc/buildkit/tls/ca.pem",
        "rm -f /etc/buildkit/tls/server.pem",
        "rmdir /etc/buildkit/tls 2>/dev/null || true",
    )
    names = list(steps)
    assert names.index("Remove the server's TLS files") > names.index(
        "Check that BuildKit answers with the containerd worker"
    )


def test_removal_disables_a_remote_builder_and_takes_its_tls_folder_before_its_parent(tmp_path, authority):
    settings = remote_settings(tmp_path)
    state = remote_converged(settings, authority)
    removal = plan_removal(state, (BUILDKIT,))
    assert removal.disable_service and set(layout.TLS_FILES) <= set(removal.files)
    steps = [
        step for step in removal_steps(settings, state, removal, (BUILDKIT,), False, {BUILDKIT: ()}) if step.commands
    ]
    stop = next(step for step in steps if step.name == "Stop buildkit.service")
    assert stop.commands[-1] == "systemctl disable buildkit.service"
    names = [step.name for step in steps]
    assert names.index("Remove /etc/buildkit/tls if empty") < names.index("Remove /etc/buildkit if empty")


class UploadingHost:
    """Records what an upload runs on the host, as which user."""

    name = "build-1"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def run_shell_command(self, command, **arguments):
        self.calls.append(("run", str(command), arguments.get("_sudo")))
        return True, SimpleNamespace(stdout="/tmp/tmp.Xy12\n", stderr="")

    def put_file(self, src, dest, remote_temp_filename=None, **arguments):
        self.calls.append(("put", dest, remote_temp_filename, arguments.get("_sudo")))
        return True


def test_a_key_uploaded_through_sudo_goes_through_a_temporary_file_only_the_login_user_reads():
    state = SimpleNamespace(print_output=False, print_input=False)
    through_sudo = UploadingHost()
    assert PrivateUploadCommand(StringIO("key"), "/etc/buildkit/tls/server.pem.tmp").execute(
        state, through_sudo, {"_sudo": True, "_su_user": None}
    )
    assert through_sudo.calls == [
        ("run", "umask 077 && mktemp", False),
        ("put", "/etc/buildkit/tls/server.pem.tmp", "/tmp/tmp.Xy12", True),
    ]
    as_root = UploadingHost()
    assert PrivateUploadCommand(StringIO("key"), "/etc/buildkit/tls/server.pem.tmp").execute(state, as_root, {})
    assert as_root.calls == [("put", "/etc/buildkit/tls/server.pem.tmp", None, None)]
