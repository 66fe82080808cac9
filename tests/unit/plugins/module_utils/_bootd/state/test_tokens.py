# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One-time agent tokens: claimed once, then bound to the host's MAC and the claimer's address."""

from __future__ import annotations

import hmac
import os

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state import tokens as tokens_module
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TokenRefused, TokenStore

MAC = "52:54:00:aa:00:01"
OTHER_MAC = "52:54:00:aa:00:02"
IP = "10.213.0.50"


@pytest.fixture
def store():
    return TokenStore()


def test_minted_tokens_are_long_url_safe_and_unique(store):
    minted = {store.mint(MAC) for dummy in range(200)}
    assert len(minted) == 200
    for token in minted:
        assert len(token) >= 22  # 22 base64url characters carry 128 bits
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_refuses_fewer_than_128_bits():
    with pytest.raises(ValueError):
        TokenStore(token_bytes=15)


def test_first_claim_with_the_hosts_mac_binds_the_token(store):
    token = store.mint(MAC)
    assert store.claim(token, [OTHER_MAC, MAC], IP) == MAC
    assert store.outstanding() == {} and store.holds(MAC)


def test_same_address_may_report_again(store):
    token = store.mint(MAC)
    store.claim(token, [MAC], IP)
    assert store.claim(token, [MAC], IP) == MAC
    store.check(token, IP)


def test_replay_from_another_address_is_refused(store):
    token = store.mint(MAC)
    store.claim(token, [MAC], IP)
    with pytest.raises(TokenRefused) as refused:
        store.claim(token, [MAC], "10.213.0.51")
    assert refused.value.mac == MAC
    with pytest.raises(TokenRefused):
        store.check(token, "10.213.0.51")


def test_wrong_mac_is_refused_and_does_not_bind(store):
    token = store.mint(MAC)
    with pytest.raises(TokenRefused, match="MAC"):
        store.claim(token, [OTHER_MAC], IP)
    # The failed attempt must not have bound the token to the attacker's address.
    assert store.claim(token, [MAC], "10.213.0.99") == MAC


def test_unknown_and_forged_tokens_are_refused(store):
    token = store.mint(MAC)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for candidate in (forged, "", "x" * 43, token + "x", token[:-1], "é" * 43, "\x00" * 43, None, 42, token.encode() + b"\xff"):
        with pytest.raises(TokenRefused):
            store.claim(candidate, [MAC], IP)
    assert store.claim(token, [MAC], IP) == MAC


def test_a_new_mint_replaces_the_old_token(store):
    first = store.mint(MAC)
    second = store.mint(MAC)
    with pytest.raises(TokenRefused):
        store.claim(first, [MAC], IP)
    assert store.claim(second, [MAC], IP) == MAC


def test_a_token_cannot_be_used_for_another_host(store):
    token_a = store.mint(MAC)
    store.mint(OTHER_MAC)
    with pytest.raises(TokenRefused):
        store.claim(token_a, [OTHER_MAC], IP)


def test_an_unclaimed_token_is_outstanding_and_held(store):
    token = store.mint(MAC)
    assert store.outstanding() == {MAC: token} and store.holds(MAC) and not store.holds(OTHER_MAC)


def test_revoked_token_is_refused(store):
    token = store.mint(MAC)
    store.revoke(MAC)
    with pytest.raises(TokenRefused):
        store.check(token, IP)


def test_every_grant_is_compared_in_constant_time(store, monkeypatch):
    """The lookup goes through hmac.compare_digest for every grant, not a dict lookup or an early exit."""
    for index in range(5):
        store.mint("52:54:00:bb:00:%02x" % index)
    target = store.mint(MAC)
    compared = []
    real_compare = hmac.compare_digest

    def counting_compare(a, b):
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting_compare)
    assert store.claim(target, [MAC], IP) == MAC
    assert len(compared) == 6
    compared.clear()
    with pytest.raises(TokenRefused):
        store.check("A" * 43, IP)
    assert len(compared) == 6


def test_outstanding_lists_unclaimed_tokens_and_the_journal_follows_every_change():
    journal = []
    store = TokenStore(journal=journal.append)
    first = store.mint(MAC)
    second = store.mint(OTHER_MAC)
    assert journal[-1] == store.outstanding() == {MAC: first, OTHER_MAC: second}
    store.claim(first, [MAC], IP)
    assert journal[-1] == {OTHER_MAC: second}
    changes = len(journal)
    store.claim(first, [MAC], IP)
    assert len(journal) == changes, "a repeated report of a claimed token changes nothing outstanding"
    store.revoke(OTHER_MAC)
    store.revoke(OTHER_MAC)
    assert journal[changes:] == [{}]


def test_adopted_tokens_are_claimed_like_minted_ones():
    earlier = TokenStore()
    token = earlier.mint(MAC)
    restarted = TokenStore()
    restarted.adopt(earlier.outstanding())
    with pytest.raises(TokenRefused):
        restarted.claim(token, [OTHER_MAC], IP)
    assert restarted.claim(token, [MAC], IP) == MAC
    assert restarted.outstanding() == {}
    replaced = restarted.mint(MAC)
    with pytest.raises(TokenRefused):
        restarted.check(token, IP)
    assert restarted.outstanding() == {MAC: replaced}


def test_outstanding_tokens_file_round_trips_for_its_owner_alone(tmp_path):
    path = str(tmp_path / contract.TOKENS_FILE)
    assert tokens_module.read_outstanding(path) == {}
    tokens_module.write_outstanding(path, {MAC: "a" * 43})
    tokens_module.write_outstanding(path, {MAC: "b" * 43, OTHER_MAC: "c" * 43})
    assert tokens_module.read_outstanding(path) == {MAC: "b" * 43, OTHER_MAC: "c" * 43}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(str(tmp_path)) == [contract.TOKENS_FILE]


@pytest.mark.parametrize("text", ["{not json", '["52:54:00:aa:00:01"]', '{"52:54:00:aa:00:01": 7}'])
def test_a_damaged_tokens_file_is_named(tmp_path, text):
    path = tmp_path / contract.TOKENS_FILE
    path.write_text(text)
    with pytest.raises(NixieError) as raised:
        tokens_module.read_outstanding(str(path))
    assert str(path) in str(raised.value) and "delete it" in str(raised.value)
