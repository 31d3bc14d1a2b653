"""Validating a batch's input file: JSONL, one request per line, read as the file streams in.

OpenAI's rules: every line a JSON object with a `custom_id` (unique in the file), `method`
"POST", a `url` equal to the batch's `endpoint`, and a `body` object naming the `model` — one
model for the whole file; at most `max_lines` lines and `max_bytes` bytes. The first errors
(up to MAX_ERRORS) are reported with their 1-based line numbers; the batch then fails whole.
A body's own fields are checked when its line runs (an error line, the batch goes on).

Parsing runs off the event loop (a thread per chunk of the file): a 200 MB file is seconds of
CPU that must not stall other requests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokendock.storage.quota import QuotaExceeded

MAX_ERRORS = 20
CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # Anthropic's rule; OpenAI's ids fit it too
CUSTOM_ID_MAX = 64


@dataclass(slots=True)
class Problem:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(slots=True)
class Checked:
    """What validation found so far: lines to insert, the model, and the problems."""

    endpoint: str
    max_lines: int
    count: int = 0
    model: str | None = None
    seen: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        if len(self.problems) < MAX_ERRORS:
            self.problems.append(Problem(code, message, line, param))

    def take(self, raw: list[bytes]) -> list[tuple[str, str]]:
        """Check these lines (in order); the (custom_id, body JSON) of the valid ones. Runs in
        a worker thread: pure CPU on its own arguments and this object."""
        good: list[tuple[str, str]] = []
        for text in raw:
            if not text.strip():
                continue
            self.count += 1
            number = self.count
            if number > self.max_lines:
                if number == self.max_lines + 1:
                    self.problem(
                        "too_many_requests",
                        f"The file has more than {self.max_lines} requests; split it into "
                        "several batches.",
                        number,
                    )
                continue
            one = self._line(text, number)
            if one is not None:
                good.append(one)
        return good

    def _line(self, text: bytes, number: int) -> tuple[str, str] | None:
        try:
            item = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.problem("invalid_json_line", "This line is not valid JSON.", number)
            return None
        if not isinstance(item, dict):
            self.problem("invalid_request", "Each line must be a JSON object.", number)
            return None
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            self.problem(
                "missing_required_parameter", "custom_id is required.", number, "custom_id"
            )
            return None
        if len(custom_id) > CUSTOM_ID_MAX:
            self.problem(
                "invalid_custom_id",
                f"custom_id is longer than {CUSTOM_ID_MAX} characters.",
                number,
                "custom_id",
            )
            return None
        if custom_id in self.seen:
            self.problem(
                "duplicate_custom_id",
                f"The custom_id '{custom_id}' is used by an earlier line; each must be unique.",
                number,
                "custom_id",
            )
            return None
        self.seen.add(custom_id)
        if item.get("method", "POST") != "POST":
            self.problem("invalid_method", "method must be 'POST'.", number, "method")
            return None
        if item.get("url") != self.endpoint:
            self.problem(
                "mismatched_endpoint",
                f"The url of this line is not the batch's endpoint '{self.endpoint}'.",
                number,
                "url",
            )
            return None
        body = item.get("body")
        if not isinstance(body, dict):
            self.problem("invalid_request", "body must be a JSON object.", number, "body")
            return None
        model = body.get("model")
        if not isinstance(model, str):
            self.problem("missing_required_parameter", "body.model is required.", number, "body")
            return None
        if self.model is None:
            self.model = model
        elif model != self.model:
            self.problem(
                "mismatched_model",
                f"Every line of a batch must use the same model: this line uses '{model}', "
                f"earlier lines '{self.model}'.",
                number,
                "body.model",
            )
            return None
        return custom_id, orjson.dumps(body).decode()


class LineTooLong(Exception):
    """A line longer than a request body may be (the route would refuse it too)."""


async def lines_of(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[list[bytes]]:
    """The file's lines, a chunk's worth at a time (a line may span chunks). LineTooLong once
    a line passes `max_line` bytes: what is kept between chunks stays bounded."""
    rest = b""
    async for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        if len(rest) > max_line or any(len(p) > max_line for p in parts):
            raise LineTooLong
        if parts:
            yield parts
    if rest:
        yield [rest]


async def read_input(
    chunks: AsyncIterator[bytes],
    checked: Checked,
    max_line: int,
    add: Callable[[int, list[tuple[str, str]]], Awaitable[None]],
) -> None:
    """Check the file's lines as it streams in (parsing in a worker thread), handing each
    chunk's valid lines to `add(start, lines)`; stops at the first problem, which `checked`
    records (a line too long, the storage quota passed)."""
    start = 0
    try:
        async for raw in lines_of(chunks, max_line):
            good = await asyncio.to_thread(checked.take, raw)
            if checked.problems:
                return
            if good:
                await add(start, good)
                start += len(good)
    except LineTooLong:
        number = checked.count + 1
        checked.problem("line_too_long", f"Line {number} is longer than {max_line} bytes.", number)
    except QuotaExceeded as exc:
        checked.problem(
            "storage_quota_exceeded",
            f"The batch's requests would take the account past its storage quota "
            f"({exc.limit} bytes): delete stored objects, or split the batch.",
            None,
        )
