"""The Conversations API and /v1/responses/compact through the official openai SDK against
the real server and the embedded model, on SQLite and PostgreSQL: a conversation made with an
item, a response in it (its turn appended), a compaction of the conversation (a summary the
model wrote, billed), a response reading the compaction item, a changed one refused."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import MODEL


def test_conversation_response_and_compaction(client: openai.OpenAI) -> None:
    conv = client.conversations.create(
        items=[{"role": "user", "content": "My name is Ada and I like tea."}],
        metadata={"who": "Ada ☕"},
    )
    assert conv.id.startswith("conv_") and conv.metadata == {"who": "Ada ☕"}
    first = client.responses.create(
        model=MODEL,
        conversation=conv.id,
        input="What do I like to drink?",
        max_output_tokens=30,
        temperature=0,
    )
    assert first.conversation is not None and first.conversation.id == conv.id
    assert first.usage is not None and first.usage.input_tokens > 15  # the prefix was read
    items = list(client.conversations.items.list(conv.id, order="asc"))
    assert [i.type for i in items] == ["message", "message", "message"]
    assert items[-1].id == first.output[0].id

    history = [
        {"role": i.role, "content": "".join(p.text for p in i.content)}  # type: ignore[union-attr]
        for i in items
    ]
    history.append({"role": "user", "content": "And what is my name?"})
    compacted = client.responses.compact(  # a short summary: TokenDock's max_output_tokens
        model=MODEL,
        input=history,  # type: ignore[arg-type]
        extra_body={"max_output_tokens": 48},
    )
    assert compacted.object == "response.compaction"
    assert compacted.usage.input_tokens > 0 and 0 < compacted.usage.output_tokens <= 48
    item, *kept = compacted.output
    assert item.type == "compaction" and len(kept) == 1 and kept[0].type == "message"

    sent = item.model_dump(exclude_none=True)
    later = client.responses.create(
        model=MODEL,
        input=[sent, {"role": "user", "content": "And what is my name?"}],
        max_output_tokens=20,
        temperature=0,
    )
    assert later.status in ("completed", "incomplete") and later.usage is not None
    changed = {**sent, "encrypted_content": sent["encrypted_content"][:-3] + "abc"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input=[changed], max_output_tokens=5)
    assert refused.value.param == "input"  # type: ignore[attr-defined]
    assert client.conversations.delete(conv.id).deleted
