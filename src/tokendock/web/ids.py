"""Request and response ids: unique, not secret — from a per-process generator seeded by the OS
once (and again in a forked child), instead of an `os.urandom` system call per id."""

from __future__ import annotations

import os
import random
import secrets

_rng = random.Random(secrets.randbits(128))


def _reseed() -> None:
    _rng.seed(secrets.randbits(128))


os.register_at_fork(after_in_child=_reseed)


def hex_id(nbytes: int) -> str:
    """`nbytes` random bytes as lowercase hex (what secrets.token_hex returns)."""
    return f"{_rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"
