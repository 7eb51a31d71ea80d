"""API keys: parsing, scopes, constant-time lookup and reloading a Kubernetes-style mounted Secret."""

from __future__ import annotations

import hmac
import json
import logging

import pytest

from server import auth
from server.auth import ADMIN, SCORE, ApiKeys, Gate, KeysFileError, parse_keys
from server.errors import Forbidden, Unauthorized

from .keys import keys_document, mount_keys, new_key

SCORING_KEY, ADMIN_KEY = new_key(), new_key()
KEYS = {"scoring": ([SCORE], SCORING_KEY), "ops": ([ADMIN], ADMIN_KEY)}


@pytest.fixture
def keys(tmp_path) -> ApiKeys:
    return ApiKeys(mount_keys(tmp_path / "secret", keys_document(KEYS)), recheck_s=0)


def bearer(key: str) -> str:
    return f"Bearer {key}"


def test_a_key_names_its_caller_and_admin_includes_score(keys):
    assert keys.caller(bearer(SCORING_KEY)) == auth.Caller("scoring", frozenset({SCORE}))
    admin = keys.caller(f"bearer   {ADMIN_KEY}  ")  # the scheme is case-insensitive, spaces are not the key
    assert admin.name == "ops" and admin.may(SCORE) and admin.may(ADMIN)


@pytest.mark.parametrize("header, invalid", [
    (None, False), ("", False), (f"Basic {SCORING_KEY}", False), ("Bearer", False), ("Bearer  ", False),
    ("Bearer not-a-key-of-this-server", True), (f"Bearer {SCORING_KEY}x", True), (f"Bearer {SCORING_KEY[:-1]}", True),
])
def test_no_key_or_an_unknown_key_is_401_with_a_bearer_challenge(keys, header, invalid):
    with pytest.raises(Unauthorized) as caught:
        keys.caller(header)
    challenge = caught.value.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="mis"') and ('error="invalid_token"' in challenge) == invalid
    assert SCORING_KEY not in json.dumps(caught.value.to_dict(with_private=True))


def test_a_key_without_the_scope_is_403_naming_the_scope(keys):
    gate = Gate(keys)
    assert gate.admit(SCORE, bearer(SCORING_KEY)).name == "scoring"
    with pytest.raises(Forbidden) as caught:
        gate.admit(ADMIN, bearer(SCORING_KEY))
    assert caught.value.status == 403 and caught.value.details == {"required_scope": ADMIN}
    assert 'scope="admin"' in caught.value.headers["WWW-Authenticate"]
    assert gate.admit(None, None) is None  # open operations need nothing


def test_authentication_off_trusts_the_loopback_caller_as_admin():
    gate = Gate(None)
    assert not gate.enabled and gate.admit(ADMIN, None).may(ADMIN)


def test_every_key_is_compared_whichever_matches(keys, monkeypatch):
    """The lookup does not stop at the matching key, so its time does not say which key (or how
    much of one) matched; and only digests are compared, never the keys themselves."""
    compared = []
    real = hmac.compare_digest

    def counting(a, b):
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for header in (bearer(SCORING_KEY), bearer(ADMIN_KEY), bearer(new_key())):
        compared.clear()
        try:
            keys.caller(header)
        except Unauthorized:
            pass
        assert compared == [(32, 32)] * len(KEYS)


@pytest.mark.parametrize("text, message", [
    ("{", "not JSON"),
    ("[]", "expected"),
    ('{"keys": {}}', "expected"),
    ('{"keys": [1]}', "key #1 is not an object"),
    ('{"keys": [{"scopes": ["score"], "key": "%s"}]}' % SCORING_KEY, "key #1 needs a `name`"),
    ('{"keys": [{"name": "a", "scopes": [], "key": "%s"}]}' % SCORING_KEY, "key 'a' needs `scopes`"),
    ('{"keys": [{"name": "a", "scopes": ["root"], "key": "%s"}]}' % SCORING_KEY, "key 'a' needs `scopes`"),
    ('{"keys": [{"name": "a", "scopes": "score", "key": "%s"}]}' % SCORING_KEY, "key 'a' needs `scopes`"),
    ('{"keys": [{"name": "a", "scopes": ["score"], "key": "short"}]}', "at least 16"),
    ('{"keys": [{"name": "a", "scopes": ["score"], "key": "with spaces in the key"}]}', "without spaces"),
    ('{"keys": [{"name": "a", "scopes": ["score"], "key": 12345678901234567890}]}', "key 'a' needs a `key`"),
    (keys_document({"a": ([SCORE], SCORING_KEY), "b": ([ADMIN], SCORING_KEY)}), "repeats"),
    (keys_document({"a": ([SCORE], SCORING_KEY)}).replace("]}", ', {"name": "a", "scopes": ["admin"], "key": "%s"}]}'
                                                            % ADMIN_KEY), "repeats"),
    ('{"keys": [{"name": "a", "scopes": [["admin"]], "key": "%s"}]}' % SCORING_KEY, "key 'a' needs `scopes`"),
    (b'{"keys": [{"name": "\xff", "scopes": ["admin"], "key": "k"}]}', "not JSON text"),
    ("[" * 100000, "not JSON"),
])
def test_a_malformed_keys_file_is_refused_saying_why_and_never_showing_a_key(text, message):
    with pytest.raises(KeysFileError, match=message) as caught:
        parse_keys(text)
    assert SCORING_KEY not in str(caught.value) and ADMIN_KEY not in str(caught.value)


def test_a_server_does_not_start_on_an_unusable_keys_file(tmp_path):
    with pytest.raises(KeysFileError, match="cannot read"):
        ApiKeys(tmp_path / "missing.json")
    with pytest.raises(KeysFileError, match="not JSON"):
        ApiKeys(mount_keys(tmp_path / "secret", "{"))


def test_a_secret_update_is_seen_without_a_restart(tmp_path, keys):
    rotated = new_key()
    mount_keys(keys.path.parent, keys_document({"scoring": ([SCORE], rotated), "ops": ([ADMIN], ADMIN_KEY)}))
    assert keys.caller(bearer(rotated)).name == "scoring"
    with pytest.raises(Unauthorized):
        keys.caller(bearer(SCORING_KEY))  # the old key is gone at once


def test_a_broken_update_keeps_the_last_good_keys_and_logs_why_once(keys, caplog):
    mount_keys(keys.path.parent, '{"keys": [{"name": "a"')
    with caplog.at_level(logging.ERROR, logger="server.auth"):
        for _ in range(3):
            assert keys.caller(bearer(SCORING_KEY)).name == "scoring"
    assert [r.getMessage() for r in caplog.records].count(
        f"API keys file unusable, keeping the last good keys: {keys.path}: not JSON (Expecting ',' delimiter at line 1)"
    ) == 1
    fixed = new_key()
    mount_keys(keys.path.parent, keys_document({"scoring": ([SCORE], fixed)}))
    assert keys.caller(bearer(fixed)).name == "scoring"  # the next good version is taken


def test_the_file_is_looked_at_no_more_than_once_per_recheck_interval(tmp_path):
    keys = ApiKeys(mount_keys(tmp_path / "secret", keys_document(KEYS)), recheck_s=3600)
    mount_keys(keys.path.parent, keys_document({"scoring": ([SCORE], new_key())}))
    assert keys.caller(bearer(SCORING_KEY)).name == "scoring"  # not re-read yet: within the interval


def test_a_vanished_keys_file_keeps_the_last_good_keys_and_logs_once(keys, caplog):
    (keys.path.parent / "..data").unlink()  # the Secret's files are gone
    with caplog.at_level(logging.ERROR, logger="server.auth"):
        for _ in range(3):
            assert keys.caller(bearer(SCORING_KEY)).name == "scoring"
    assert len(caplog.records) == 1 and "cannot read" in caplog.records[0].getMessage()
    back = new_key()
    mount_keys(keys.path.parent, keys_document({"scoring": ([SCORE], back)}))
    assert keys.caller(bearer(back)).name == "scoring"
