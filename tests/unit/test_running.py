"""services/running.py and services/access.py without I/O: which calls a change of access ends,
a change remembered for calls admitted just after it, and each stored change applied once."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokendock.errors import TokenDockError
from tokendock.services.access import AccessWatch
from tokendock.services.running import (
    ACCOUNT_DISABLED,
    ACCOUNT_ENABLED,
    KEY_REVOKED,
    AccessChange,
    Running,
)
from tokendock.storage.access import AccessEvent


@dataclass(eq=False)
class FakeCall:
    account_id: int
    key_id: int
    stopped: list[TokenDockError] = field(default_factory=list)

    def stop(self, error: TokenDockError) -> None:
        self.stopped.append(error)


def test_a_disabled_account_ends_all_its_calls_and_only_its() -> None:
    running = Running()
    mine = [FakeCall(1, 10), FakeCall(1, 11)]
    theirs = FakeCall(2, 20)
    for call in (*mine, theirs):
        running.add(call)
    assert running.end(AccessChange(1, None, ACCOUNT_DISABLED)) == 2
    assert all(c.stopped and c.stopped[0].code == "account_disabled" for c in mine)
    assert mine[0].stopped[0].status == 401
    assert theirs.stopped == []


def test_a_revoked_key_ends_only_that_keys_calls() -> None:
    running = Running()
    revoked, kept = FakeCall(1, 10), FakeCall(1, 11)
    running.add(revoked)
    running.add(kept)
    assert running.end(AccessChange(1, 10, KEY_REVOKED)) == 1
    assert revoked.stopped[0].code == "key_revoked" and kept.stopped == []


def test_a_call_added_just_after_a_change_is_stopped_at_once() -> None:
    running = Running()
    running.end(AccessChange(1, None, ACCOUNT_DISABLED))
    late = FakeCall(1, 10)
    running.add(late)  # authenticated from a cache before the change, admitted after it
    assert late.stopped[0].code == "account_disabled"
    running.end(AccessChange(1, None, ACCOUNT_ENABLED))
    again = FakeCall(1, 10)
    running.add(again)
    assert again.stopped == []


def test_a_change_is_forgotten_after_a_while() -> None:
    running = Running(remember=0.0)
    running.end(AccessChange(1, 10, KEY_REVOKED))
    call = FakeCall(1, 10)
    running.add(call)
    assert call.stopped == []


def test_discarded_calls_are_not_ended() -> None:
    running = Running()
    call = FakeCall(1, 10)
    running.add(call)
    running.discard(call)
    assert running.end(AccessChange(1, None, ACCOUNT_DISABLED)) == 0
    assert running.count(1) == 0


class FakeEvents:
    def __init__(self, events: list[AccessEvent]):
        self.events = events

    async def latest(self) -> int:
        return max((e.id for e in self.events), default=0)

    async def since(self, last_id: int) -> list[AccessEvent]:
        return sorted((e for e in self.events if e.id > last_id), key=lambda e: e.id)


async def test_each_stored_change_is_applied_once_even_out_of_order() -> None:
    old = AccessEvent(1, 1, None, ACCOUNT_DISABLED)
    store = FakeEvents([old])
    running = Running()
    forgotten: list[int] = []
    watch = AccessWatch(store, running, lambda: forgotten.append(1))  # type: ignore[arg-type]
    await watch.start()
    assert await watch.poll() == 0 and forgotten == []  # what came before start is not applied
    call = FakeCall(2, 20)
    running.add(call)
    store.events.append(AccessEvent(3, 9, None, ACCOUNT_DISABLED))
    await watch.poll()
    assert forgotten == [1] and call.stopped == []
    # id 2 committed after id 3 was read (ids come from a sequence at insert): still applied
    store.events.append(AccessEvent(2, 2, 20, KEY_REVOKED))
    assert await watch.poll() == 1
    assert call.stopped[0].code == "key_revoked"
    assert await watch.poll() == 0 and len(forgotten) == 2  # nothing applied twice
