"""POST /v1/responses/compact: a conversation's older turns replaced by ONE compaction item
holding a model-written summary of them; the recent turns kept as they were.

What is kept: the last user message and everything after it (the question being worked on,
and the calls and answers it led to). Everything before it is summarized — by the same model,
through the one pipeline (the route drives it like any response: admitted, held, billed, its
usage row's endpoint "responses.compact"). When the last user message is the first item,
there is nothing older, so the whole conversation is summarized (nothing is kept beside it).
A compaction item among the older turns is opened and its summary summarized again.

The item's `encrypted_content` is SIGNED, not encrypted (the summary is the account's own
text): `td1.<payload>.<mac>`, the payload base64url JSON {"summary", "model", "created"} and
the mac HMAC-SHA256 over the version, the account's id and the payload, with a key derived
from the server's secret (the dashboard sessions' secret: configured, or kept in the data
directory). Changing a byte, or sending the item from another account, fails the check: a 400
naming `input`, before anything is admitted. Replicas must share the secret
(`TOKENDOCK_SESSION_SECRET`) for an item made on one to be read on another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable

import orjson

from tokendock.errors import InvalidRequest
from tokendock.inference.backend import InferenceRequest, Passthrough
from tokendock.inference.vocabulary import ChatTurn
from tokendock.protocol.bounds import TEMPLATE_TOKENS_PER_MESSAGE, TEMPLATE_TOKENS_PER_PROMPT
from tokendock.protocol.response_shapes import JSON, new_id, response_usage

VERSION = "td1"
KEY_LABEL = b"tokendock/responses.compact/v1"
ENDPOINT = "responses.compact"
SUMMARY_HEADING = "Summary of the earlier conversation:"
SUMMARY_TOKENS = 512  # a summary's length at most: what a compaction's hold covers

SUMMARIZE = (
    "You compact a conversation so it can go on in less space. Write a concise summary of the "
    "conversation below: the user's goals, the facts, decisions and results established, tool "
    "calls made and what they returned, and anything still open. Write only the summary."
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _refused(why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid 'input': {why}", param="input", code="invalid_compaction")


class Seal:
    """Signs a summary into a compaction item's `encrypted_content` for one account, and
    checks one (tamper-evident, bound to the account)."""

    def __init__(self, secret: bytes):
        self._key = hmac.new(secret, KEY_LABEL, hashlib.sha256).digest()

    def _mac(self, account_id: int, payload: str) -> bytes:
        signed = f"{VERSION}.{account_id}.{payload}".encode()
        return hmac.new(self._key, signed, hashlib.sha256).digest()

    def seal(self, account_id: int, summary: str, model: str) -> str:
        body = {"summary": summary, "model": model, "created": int(time.time())}
        payload = _b64(orjson.dumps(body))
        return f"{VERSION}.{payload}.{_b64(self._mac(account_id, payload))}"

    def open(self, account_id: int, content: str) -> str:
        """The summary; a 400 naming `input` when the content was not sealed by this server
        for this account (changed, truncated, another account's, or not a compaction)."""
        parts = content.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise _refused("a compaction item's encrypted_content is not one this server made.")
        _, payload, mac = parts
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, self._mac(account_id, payload)):
            raise _refused("a compaction item's encrypted_content failed its integrity check.")
        summary = orjson.loads(_unb64(payload))["summary"]
        return str(summary)

    def opened(self, account_id: int, items: Iterable[JSON]) -> dict[str, str]:
        """Each compaction item's summary by its encrypted_content (every one checked)."""
        found: dict[str, str] = {}
        for item in items:
            if item.get("type") == "compaction":
                content = item["encrypted_content"]
                if content not in found:
                    found[content] = self.open(account_id, content)
        return found


def split(items: list[JSON]) -> tuple[list[JSON], list[JSON]]:
    """(older, kept): kept is the last user message and what follows it; with nothing before
    that message, everything is older (summarized)."""
    last = None
    for at, item in enumerate(items):
        if item["type"] == "message" and item.get("role") == "user":
            last = at
    if not last:  # no user message, or only the first item is one
        return list(items), []
    return items[:last], items[last:]


def transcript(items: list[JSON], opened: dict[str, str], instructions: str | None) -> str:
    """The older turns as plain text for the summarizer."""
    lines = [f"[instructions] {instructions}"] if instructions else []
    for item in items:
        kind = item["type"]
        if kind == "message":
            text = "".join(p["text"] for p in item["content"])
            lines.append(f"[{item['role']}] {text}")
        elif kind == "function_call":
            lines.append(f"[assistant called {item['name']}] {item['arguments']}")
        elif kind == "function_call_output":
            lines.append(f"[result of {item['call_id']}] {item['output']}")
        elif kind == "compaction":
            lines.append(f"[summary of what came before] {opened[item['encrypted_content']]}")
    return "\n\n".join(lines)


def summary_request(model: str, text: str, most: int | None = None) -> InferenceRequest:
    """The summarizer's request: one system turn (what to do), one user turn (the turns); the
    summary is at most SUMMARY_TOKENS long, or `most` when the client asked for fewer."""
    turns = (ChatTurn("system", SUMMARIZE), ChatTurn("user", text))
    limit = SUMMARY_TOKENS if most is None else min(most, SUMMARY_TOKENS)
    messages = [{"role": t.role, "content": t.content} for t in turns]
    body = {"model": model, "messages": messages, "max_tokens": limit}  # an upstream's too
    size = TEMPLATE_TOKENS_PER_PROMPT + 2 * TEMPLATE_TOKENS_PER_MESSAGE
    size += len(SUMMARIZE.encode()) + len(text.encode())
    return InferenceRequest(
        kind="chat",
        endpoint=ENDPOINT,
        model=model,
        turns=turns,
        prompt_bytes=(size,),
        max_tokens=limit,
        payload=Passthrough(orjson.dumps(body)),
    )


def compaction_item(seal: Seal, account_id: int, summary: str, model: str) -> JSON:
    return {
        "id": new_id("cmp"),
        "type": "compaction",
        "encrypted_content": seal.seal(account_id, summary.strip(), model),
    }


def compacted(item: JSON, kept: list[JSON], usage: tuple[int, int, int]) -> JSON:
    """OpenAI's `response.compaction` object: the compaction item, then the kept turns."""
    return {
        "id": new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [item, *kept],
        "usage": response_usage(*usage),
    }


def summary_turn(opened: dict[str, str], items: Iterable[JSON]) -> str:
    """The summaries of the compaction items among `items`, as one system text."""
    texts = [opened[i["encrypted_content"]] for i in items if i.get("type") == "compaction"]
    return "\n\n".join(f"{SUMMARY_HEADING}\n{text}" for text in texts)
