"""The compaction item's seal (services/compaction.py): what one account sealed opens for it
and for nothing else; any changed byte, a truncation, another secret or a foreign format is a
400 naming `input`; which turns are kept."""

from __future__ import annotations

import pytest

from tokendock.errors import InvalidRequest
from tokendock.services.compaction import Seal, split, transcript

SUMMARY = "The user wants a haiku about ☃; the code is 42."


def test_round_trip() -> None:
    seal = Seal(b"secret-one")
    content = seal.seal(7, SUMMARY, "fake-model")
    assert content.startswith("td1.")
    assert seal.open(7, content) == SUMMARY
    assert Seal(b"secret-one").open(7, content) == SUMMARY  # same secret: another replica


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),  # the mac
        lambda c: c.replace("td1.", "td1.x", 1),  # the payload
        lambda c: c.rpartition(".")[0],  # no mac
        lambda c: c + ".more",
        lambda c: "td2" + c[3:],
        lambda c: "",
        lambda c: "not a compaction",
    ],
)
def test_tampered_is_refused(change) -> None:  # type: ignore[no-untyped-def]
    seal = Seal(b"secret-one")
    content = seal.seal(7, SUMMARY, "fake-model")
    with pytest.raises(InvalidRequest) as refused:
        seal.open(7, change(content))
    assert refused.value.param == "input"


def test_every_payload_byte_is_covered() -> None:
    seal = Seal(b"secret-one")
    content = seal.seal(7, SUMMARY, "fake-model")
    _, payload, mac = content.split(".")
    for at in range(len(payload)):
        flipped = payload[:at] + ("a" if payload[at] != "a" else "b") + payload[at + 1 :]
        with pytest.raises(InvalidRequest):
            seal.open(7, f"td1.{flipped}.{mac}")


def test_bound_to_account_and_secret() -> None:
    content = Seal(b"secret-one").seal(7, SUMMARY, "fake-model")
    with pytest.raises(InvalidRequest):
        Seal(b"secret-one").open(8, content)
    with pytest.raises(InvalidRequest):
        Seal(b"secret-two").open(7, content)


def test_opened_checks_every_compaction_item() -> None:
    seal = Seal(b"s")
    good = {"type": "compaction", "id": "cmp_1", "encrypted_content": seal.seal(1, "a", "m")}
    bad = {"type": "compaction", "id": "cmp_2", "encrypted_content": "td1.x.y"}
    assert seal.opened(1, [good, {"type": "message"}]) == {good["encrypted_content"]: "a"}
    with pytest.raises(InvalidRequest):
        seal.opened(1, [good, bad])


def msg(role: str, text: str) -> dict[str, object]:
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}


def test_split_keeps_the_last_user_turn_and_what_follows() -> None:
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    items = [msg("user", "a"), msg("assistant", "b"), msg("user", "c"), call]
    older, kept = split(items)
    assert older == items[:2] and kept == items[2:]
    only = [msg("user", "a"), msg("assistant", "b")]
    assert split(only) == (only, [])  # nothing older than the last user turn: all summarized
    text = transcript(older, {}, "Be brief.")
    assert text == "[instructions] Be brief.\n\n[user] a\n\n[assistant] b"
