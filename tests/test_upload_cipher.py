"""Large uploads re-key the SSH session onto AES-GCM, within what the session already allows."""

from __future__ import annotations

from types import SimpleNamespace

from pyinfra_nerdctl.deploys.operations import AEAD_CIPHERS, _prefer_aead_cipher


class FakeTransport:
    def __init__(self, cipher: str, allowed: tuple[str, ...]) -> None:
        self.local_cipher = cipher
        self.options = SimpleNamespace(ciphers=allowed)
        self.rekeyed = 0

    def get_security_options(self) -> SimpleNamespace:
        return self.options

    def renegotiate_keys(self) -> None:
        self.rekeyed += 1


def host_with(transport) -> SimpleNamespace:
    return SimpleNamespace(connector=SimpleNamespace(client=SimpleNamespace(get_transport=lambda: transport)))


def test_ctr_session_is_rekeyed_with_gcm_first_and_nothing_added():
    transport = FakeTransport("aes128-ctr", ("aes128-ctr", "aes256-ctr", "aes256-gcm@openssh.com"))
    assert _prefer_aead_cipher(None, host_with(transport))
    assert transport.options.ciphers == ("aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
    assert transport.rekeyed == 1


def test_gcm_sessions_and_other_connectors_are_left_alone():
    transport = FakeTransport(AEAD_CIPHERS[0], AEAD_CIPHERS)
    assert _prefer_aead_cipher(None, host_with(transport)) and transport.rekeyed == 0
    assert _prefer_aead_cipher(None, SimpleNamespace(connector=SimpleNamespace()))
