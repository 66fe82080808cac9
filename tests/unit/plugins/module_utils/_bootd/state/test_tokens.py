# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One-time agent tokens: one per address that fetched the script; a MAC is claimed once, by one address."""

from __future__ import annotations

import hmac
import os

import pytest

from ansible_collections.nixie.provision.plugins.module_utils._errors import NixieError
from ansible_collections.nixie.provision.plugins.module_utils._bootd import contract
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state import tokens as tokens_module
from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.tokens import TOKENS_PER_MAC, TokenConflict, TokenRefused, TokenStore

MAC = "52:54:00:aa:00:01"
OTHER_MAC = "52:54:00:aa:00:02"
IP = "10.213.0.50"
STRANGER = "10.213.0.66"


@pytest.fixture
def store():
    return TokenStore()


def test_minted_tokens_are_long_url_safe_and_unique(store):
    minted = {store.mint(MAC, IP) for dummy in range(200)}
    assert len(minted) == 200
    for token in minted:
        assert len(token) >= 22  # 22 base64url characters carry 128 bits
        assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_refuses_fewer_than_128_bits():
    with pytest.raises(ValueError):
        TokenStore(token_bytes=15)


def test_first_claim_with_the_hosts_mac_claims_the_mac(store):
    token = store.mint(MAC, IP)
    assert store.claim(token, [OTHER_MAC, MAC], IP) == MAC
    assert store.outstanding() == {} and store.state(MAC) == "claimed" and store.state(OTHER_MAC) is None


def test_same_address_may_report_again(store):
    token = store.mint(MAC, IP)
    store.claim(token, [MAC], IP)
    assert store.claim(token, [MAC], IP) == MAC
    store.check(token)


def test_a_claim_from_another_address_is_a_conflict(store):
    token = store.mint(MAC, IP)
    store.claim(token, [MAC], IP)
    with pytest.raises(TokenConflict) as refused:
        store.claim(token, [MAC], STRANGER)
    assert refused.value.mac == MAC and IP in str(refused.value)


def test_another_holders_token_claiming_a_claimed_mac_is_a_conflict(store):
    mine = store.mint(MAC, IP)
    theirs = store.mint(MAC, STRANGER)
    store.claim(mine, [MAC], IP)
    with pytest.raises(TokenConflict):
        store.claim(theirs, [MAC], STRANGER)


def test_fetching_again_replaces_only_the_fetching_addresses_token(store):
    mine = store.mint(MAC, IP)
    theirs = store.mint(MAC, STRANGER)
    again = store.mint(MAC, STRANGER)
    with pytest.raises(TokenRefused):
        store.check(theirs)
    store.check(mine)
    assert store.outstanding() == {MAC: {IP: mine, STRANGER: again}}
    assert store.claim(mine, [MAC], IP) == MAC


def test_a_mac_holds_a_bounded_number_of_tokens_and_a_full_one_keeps_them(store):
    first = store.mint(MAC, IP)
    for index in range(TOKENS_PER_MAC - 1):
        store.mint(MAC, "10.213.1.%d" % index)
    with pytest.raises(TokenRefused, match="addresses hold a token"):
        store.mint(MAC, STRANGER)
    # The holders it has may still fetch again, and none of their tokens was dropped for the newcomer.
    store.check(first)
    store.check(store.mint(MAC, IP))


def test_wrong_mac_is_refused_and_does_not_claim(store):
    token = store.mint(MAC, IP)
    with pytest.raises(TokenRefused, match="MAC"):
        store.claim(token, [OTHER_MAC], STRANGER)
    assert store.claim(token, [MAC], IP) == MAC


def test_unknown_and_forged_tokens_are_refused(store):
    token = store.mint(MAC, IP)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for candidate in (forged, "", "x" * 43, token + "x", token[:-1], "é" * 43, "\x00" * 43, None, 42, token.encode() + b"\xff"):
        with pytest.raises(TokenRefused):
            store.claim(candidate, [MAC], IP)
    assert store.claim(token, [MAC], IP) == MAC


def test_a_token_cannot_be_used_for_another_host(store):
    token_a = store.mint(MAC, IP)
    store.mint(OTHER_MAC, IP)
    with pytest.raises(TokenRefused):
        store.claim(token_a, [OTHER_MAC], IP)


def test_revoking_forgets_the_tokens_and_the_claim(store):
    token = store.mint(MAC, IP)
    store.claim(token, [MAC], IP)
    store.revoke(MAC)
    with pytest.raises(TokenRefused):
        store.check(token)
    # The host boots the installer anew (a failed install): its next phone-home may come from a new lease.
    assert store.claim(store.mint(MAC, STRANGER), [MAC], STRANGER) == MAC


def test_every_grant_is_compared_in_constant_time(store, monkeypatch):
    """The lookup goes through hmac.compare_digest for every grant, not a dict lookup or an early exit."""
    for index in range(5):
        store.mint("52:54:00:bb:00:%02x" % index, IP)
    store.mint(MAC, STRANGER)
    target = store.mint(MAC, IP)
    compared = []
    real_compare = hmac.compare_digest

    def counting_compare(a, b):
        compared.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting_compare)
    assert store.claim(target, [MAC], IP) == MAC
    assert len(compared) == 7
    compared.clear()
    with pytest.raises(TokenRefused):
        store.check("A" * 43)
    assert len(compared) == 7


def test_outstanding_lists_unclaimed_macs_and_the_journal_follows_every_change():
    journal = []
    store = TokenStore(journal=journal.append)
    first = store.mint(MAC, IP)
    stranger = store.mint(MAC, STRANGER)
    second = store.mint(OTHER_MAC, IP)
    assert journal[-1] == store.outstanding() == {MAC: {IP: first, STRANGER: stranger}, OTHER_MAC: {IP: second}}
    store.claim(first, [MAC], IP)
    # A claimed MAC's other tokens are not owed to anyone: a restarted server must not let them claim it afresh.
    assert journal[-1] == {OTHER_MAC: {IP: second}}
    changes = len(journal)
    store.claim(first, [MAC], IP)
    assert len(journal) == changes, "a repeated report changes nothing outstanding"
    store.revoke(OTHER_MAC)
    store.revoke(OTHER_MAC)
    assert journal[changes:] == [{}]


def test_adopted_tokens_are_claimed_like_minted_ones():
    earlier = TokenStore()
    token = earlier.mint(MAC, IP)
    restarted = TokenStore()
    restarted.adopt(earlier.outstanding())
    with pytest.raises(TokenRefused):
        restarted.claim(token, [OTHER_MAC], IP)
    assert restarted.claim(token, [MAC], IP) == MAC
    assert restarted.outstanding() == {}
    replaced = restarted.mint(MAC, IP)
    with pytest.raises(TokenRefused):
        restarted.check(token)
    restarted.check(replaced)


def test_outstanding_tokens_file_round_trips_for_its_owner_alone(tmp_path):
    path = str(tmp_path / contract.TOKENS_FILE)
    assert tokens_module.read_outstanding(path) == {}
    tokens_module.write_outstanding(path, {MAC: {IP: "a" * 43}})
    tokens_module.write_outstanding(path, {MAC: {IP: "b" * 43}, OTHER_MAC: {IP: "c" * 43, STRANGER: "d" * 43}})
    assert tokens_module.read_outstanding(path) == {MAC: {IP: "b" * 43}, OTHER_MAC: {IP: "c" * 43, STRANGER: "d" * 43}}
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(str(tmp_path)) == [contract.TOKENS_FILE]


@pytest.mark.parametrize("text", ["{not json", '["52:54:00:aa:00:01"]', '{"52:54:00:aa:00:01": 7}',
                                  '{"52:54:00:aa:00:01": "an earlier version\'s token"}'])
def test_a_damaged_tokens_file_is_named(tmp_path, text):
    path = tmp_path / contract.TOKENS_FILE
    path.write_text(text)
    with pytest.raises(NixieError) as raised:
        tokens_module.read_outstanding(str(path))
    assert str(path) in str(raised.value) and "delete it" in str(raised.value)
