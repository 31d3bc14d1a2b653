"""POST /v1/responses/compact in-process through the official openai SDK
(`client.responses.compact`): the older turns become ONE compaction item whose summary the
model wrote through the pipeline (billed, usage endpoint "responses.compact"); the last user
turn and what follows are kept; a later response reads the summary; a changed item or another
account's is a 400 naming `input` with nothing billed."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.inprocess.fake_backend import PROMPT_TOKENS
from tests.inprocess.site import MODEL, Site, Tenant, cost, error_of
from tokendock.services.compaction import SUMMARIZE, SUMMARY_HEADING

SUMMARY = "Hello, world"  # what the fake model writes
HISTORY: list[Any] = [
    {"role": "user", "content": "My name is Ada."},
    {"role": "assistant", "content": "Nice to meet you, Ada."},
    {"role": "user", "content": "What is my name?"},
]


def dumped(items: Any) -> list[dict[str, Any]]:
    return [item.model_dump(exclude_none=True) for item in items]


async def compact(tenant: Tenant, **args: Any) -> Any:
    return await tenant.oai.responses.compact(model=MODEL, **args)


async def test_round_trip_is_billed_and_read_back(site: Site) -> None:
    tenant = await site.tenant()
    before = await site.balance(tenant)
    done = await compact(tenant, input=HISTORY)
    assert done.object == "response.compaction"
    item, *kept = done.output
    assert item.type == "compaction" and item.encrypted_content.startswith("td1.")
    assert [k.type for k in kept] == ["message"] and kept[0].role == "user"
    assert kept[0].content[0].text == "What is my name?"
    run = site.backend.runs[-1]
    assert run.req.endpoint == "responses.compact"
    assert run.req.turns[0].content == SUMMARIZE
    assert "[user] My name is Ada." in run.req.turns[1].content
    assert "What is my name?" not in run.req.turns[1].content  # kept, not summarized
    assert done.usage.input_tokens == PROMPT_TOKENS and done.usage.output_tokens == 3
    charged = cost(PROMPT_TOKENS, 3)
    assert await site.balance(tenant) == before - charged
    rows = await site.usage(tenant)
    assert rows[-1]["endpoint"] == "responses.compact" and rows[-1]["cost"] == charged

    later = await tenant.oai.responses.create(
        model=MODEL, input=[*dumped(done.output), {"role": "user", "content": "And now?"}]
    )
    assert later.status == "completed"
    turns = site.backend.runs[-1].req.turns
    assert turns[0].role == "system" and turns[0].content == f"{SUMMARY_HEADING}\n{SUMMARY}"
    assert [t.content for t in turns[1:]] == ["What is my name?", "And now?"]
    await site.settled_cleanly()


async def test_previous_response_history_and_chained_compaction(site: Site) -> None:
    tenant = await site.tenant()
    first = await tenant.oai.responses.create(model=MODEL, input="Tell me about Ada.")
    done = await compact(tenant, previous_response_id=first.id, input="And Babbage?")
    assert "[user] Tell me about Ada." in site.backend.runs[-1].req.turns[1].content
    assert "[assistant] Hello, world" in site.backend.runs[-1].req.turns[1].content
    again = await compact(tenant, input=[*dumped(done.output), {"role": "user", "content": "Q"}])
    summarized = site.backend.runs[-1].req.turns[1].content
    assert f"[summary of what came before] {SUMMARY}" in summarized
    assert [i.type for i in again.output] == ["compaction", "message"]


async def test_tampered_or_foreign_items_are_refused_unbilled(site: Site) -> None:
    owner, other = await site.tenant(), await site.tenant()
    done = await compact(owner, input=HISTORY)
    item = dumped(done.output)[0]
    runs = len(site.backend.runs)
    changed = {**item, "encrypted_content": item["encrypted_content"][:-2] + "xx"}
    cases = [(owner, changed), (other, item)]
    for tenant, sent in cases:
        before = await site.balance(tenant)
        for path in ("/v1/responses", "/v1/responses/compact", "/v1/responses/input_tokens"):
            resp = await site.post(path, {"model": MODEL, "input": [sent]}, tenant)
            assert resp.status_code == 400, (path, resp.text)
            assert error_of(resp)["param"] == "input"
        assert await site.balance(tenant) == before
    assert len(site.backend.runs) == runs  # nothing reached the model
    with pytest.raises(openai.BadRequestError):
        await other.oai.responses.create(model=MODEL, input=[item])


async def test_compaction_items_in_a_conversation(site: Site) -> None:
    tenant = await site.tenant()
    done = await compact(tenant, input=HISTORY)
    conv = await tenant.oai.conversations.create(items=dumped(done.output))
    listed = await tenant.oai.conversations.items.list(conv.id, order="asc")
    assert [i.type for i in listed.data] == ["compaction", "message"]
    await tenant.oai.responses.create(model=MODEL, input="Go on.", conversation=conv.id)
    turns = site.backend.runs[-1].req.turns
    assert turns[0].content.endswith(SUMMARY)
    assert [t.content for t in turns[1:]] == ["What is my name?", "Go on."]


async def test_missing_input_and_unknown_previous(site: Site) -> None:
    tenant = await site.tenant()
    resp = await site.post("/v1/responses/compact", {"model": MODEL}, tenant)
    assert resp.status_code == 400 and error_of(resp)["param"] == "input"
    resp = await site.post(
        "/v1/responses/compact", {"model": MODEL, "previous_response_id": "resp_\x00"}, tenant
    )
    assert resp.status_code == 400  # a NUL is refused at the door
    resp = await site.post(
        "/v1/responses/compact", {"model": MODEL, "previous_response_id": "resp_nope"}, tenant
    )
    assert resp.status_code == 404 and error_of(resp)["param"] == "previous_response_id"
