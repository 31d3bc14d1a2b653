from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from tokendock.security.passwords import hash_password, verify_password


def test_hash_is_argon2id_and_verifies() -> None:
    h = hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert verify_password(h, "correct horse battery staple") is True


def test_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_wrong_password_fails() -> None:
    h = hash_password("s3cret")
    assert verify_password(h, "s3cret!") is False
    assert verify_password(h, "S3cret") is False
    assert verify_password(h, "") is False


def test_no_account_is_false() -> None:
    assert verify_password(None, "anything") is False
    # not even the dummy hash's own password gets in
    assert verify_password(None, "tokendock-dummy-password") is False


def test_empty_stored_hash_never_verifies() -> None:
    # An account row whose password_hash is "" (the column is NOT NULL, so "" is what a
    # password-less account would store) must not accept any password.
    assert verify_password("", "anything") is False
    assert verify_password("", "tokendock-dummy-password") is False, (
        "BUG (security/passwords.py verify_password): an empty stored hash falls back to the "
        "dummy hash (`password_hash or _dummy()`) but the guard is `password_hash is not None`, "
        "so the dummy's password 'tokendock-dummy-password' logs in; the guard should be "
        "`bool(password_hash)`."
    )


def test_garbage_hash_is_false_not_an_exception() -> None:
    assert verify_password("not-a-hash", "x") is False
    assert verify_password("$argon2id$v=19$m=1,t=1,p=1$AAAA$BBBB", "x") is False


def _median_seconds(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_unknown_account_takes_as_long_as_a_real_verify() -> None:
    h = hash_password("pw")
    verify_password(h, "warm-up")
    verify_password(None, "warm-up")
    real = _median_seconds(lambda: verify_password(h, "wrong"))
    missing = _median_seconds(lambda: verify_password(None, "wrong"))
    # Lenient: same order of magnitude. A missing dummy hash would make `missing` ~1000× faster.
    assert missing > real / 3, (real, missing)
    assert missing < real * 3, (real, missing)
