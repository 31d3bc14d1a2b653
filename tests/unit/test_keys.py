from __future__ import annotations

import hashlib
import random
import re
import string

import pytest

from tokendock.security import keys

KEY_RE = re.compile(r"td-[A-Za-z0-9]{48}")
CODE_RE = re.compile(r"tdc-[A-Za-z0-9]{24}")
HEX64 = re.compile(r"[0-9a-f]{64}")


def test_key_format() -> None:
    key = keys.mint_key()
    assert KEY_RE.fullmatch(key), key
    assert len(key) == 3 + 48
    assert key.startswith(keys.KEY_PREFIX)


def test_code_format() -> None:
    code = keys.mint_code()
    assert CODE_RE.fullmatch(code), code


def test_keys_are_unique_over_1000_mints() -> None:
    minted = [keys.mint_key() for _ in range(1000)]
    assert all(KEY_RE.fullmatch(k) for k in minted)
    assert len(set(minted)) == 1000
    # ...and so are their digests (what the database's UNIQUE index sees)
    assert len({keys.digest(k) for k in minted}) == 1000


def test_keys_use_the_whole_base62_alphabet() -> None:
    # 1000 keys × 48 characters: every one of the 62 symbols shows up; nothing else does.
    seen = set("".join(keys.mint_key()[3:] for _ in range(1000)))
    assert seen == set(string.ascii_letters + string.digits)


def test_codes_are_unique() -> None:
    minted = {keys.mint_code() for _ in range(1000)}
    assert len(minted) == 1000


def test_digest_is_sha256_hex() -> None:
    key = keys.mint_key()
    d = keys.digest(key)
    assert HEX64.fullmatch(d), d
    assert d == hashlib.sha256(key.encode()).hexdigest()
    assert keys.digest(key) == d  # deterministic: lookup by digest works


def test_digest_known_value() -> None:
    assert keys.digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_digest_differs_per_key() -> None:
    a, b = keys.mint_key(), keys.mint_key()
    assert keys.digest(a) != keys.digest(b)
    # one changed character changes the digest
    flipped = a[:-1] + ("A" if a[-1] != "A" else "B")
    assert keys.digest(flipped) != keys.digest(a)


def test_digest_does_not_contain_the_secret() -> None:
    key = keys.mint_key()
    assert key[3:] not in keys.digest(key)


def test_display_prefix_and_last4() -> None:
    key = keys.mint_key()
    assert keys.display_prefix(key) == key[:7]
    assert keys.display_prefix(key).startswith("td-")
    assert keys.last4(key) == key[-4:]


def test_redact_a_real_key_shows_prefix_and_last4_only() -> None:
    key = keys.mint_key()
    red = keys.redact(key)
    assert red == f"{key[:7]}…{key[-4:]}"
    assert key[7:-4] not in red
    assert len(red) == 12


def _distinct(n: int, rng: random.Random) -> str:
    """n characters, no two alike, so 'does any middle character appear' is a clean test."""
    pool = list(string.ascii_letters + string.digits + "!#$%&()+,-./:;<=>?@[]^_{|}~")
    rng.shuffle(pool)
    return "".join(pool[:n])


@pytest.mark.parametrize("length", range(13, 80))
def test_redact_never_reveals_the_middle(length: int) -> None:
    secret = _distinct(length, random.Random(length))
    red = keys.redact(secret)
    middle = secret[7:-4]
    assert middle, "a secret of 13+ characters has a hidden middle"
    assert not set(middle) & set(red), (secret, red)
    # at most 11 characters of the secret are echoed, whatever its length
    assert sum(c in secret for c in red) <= 11


@pytest.mark.parametrize("length", range(13))
def test_redact_short_secrets_reveals_nothing(length: int) -> None:
    secret = _distinct(length, random.Random(length))
    assert keys.redact(secret) == "*" * length


def test_redact_of_a_minted_key_never_contains_any_middle_window() -> None:
    for _ in range(200):
        key = keys.mint_key()
        red = keys.redact(key)
        middle = key[7:-4]
        # no 5-character run from the hidden part is echoed
        assert not any(middle[i : i + 5] in red for i in range(len(middle) - 4))
