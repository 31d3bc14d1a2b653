"""Tool calls in the embedded engine's text: the prompt that offers the tools, the history of
earlier calls and their results, and the parser that turns generated text back into calls.

The format is the one structured.py constrains (`<tool_call>{"name": …, "arguments": …}
</tool_call>`). Everything here becomes message text (never template text), so nothing in a
tool's description or a call's arguments can write a control token.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tokendock.inference.structured import CALL_CLOSE, CALL_OPEN, ToolUse
from tokendock.inference.vocabulary import ChatTurn

RESULT_OPEN = "<tool_response>"
RESULT_CLOSE = "</tool_response>"


def offer(turns: Sequence[ChatTurn], use: ToolUse | None) -> tuple[ChatTurn, ...]:
    """The conversation as the model reads it: tools described in the system turn, earlier
    calls as `<tool_call>` text, tool results as a user turn of `<tool_response>` blocks."""
    out: list[ChatTurn] = []
    if use is not None and use.active:
        preamble = _preamble(use)
        if turns and turns[0].role in ("system", "developer"):
            first, turns = turns[0], turns[1:]
            out.append(ChatTurn(first.role, f"{first.content}\n\n{preamble}"))
        else:
            out.append(ChatTurn("system", preamble))
    results: list[str] = []
    for turn in turns:
        if turn.role == "tool":
            results.append(f"{RESULT_OPEN}\n{turn.content}\n{RESULT_CLOSE}")
            continue
        if results:
            out.append(ChatTurn("user", "\n".join(results)))
            results = []
        if turn.role == "assistant" and turn.tool_calls:
            calls = "\n".join(
                f"{CALL_OPEN}\n{_call_json(c.name, c.arguments)}\n{CALL_CLOSE}"
                for c in turn.tool_calls
            )
            text = f"{turn.content}\n{calls}" if turn.content else calls
            out.append(ChatTurn("assistant", text))
        else:
            out.append(ChatTurn(turn.role, turn.content))
    if results:
        out.append(ChatTurn("user", "\n".join(results)))
    return tuple(out)


def _call_json(name: str, arguments: str) -> str:
    try:
        args: Any = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        args = arguments
    return orjson.dumps({"name": name, "arguments": args}).decode()


def _preamble(use: ToolUse) -> str:
    described = "\n".join(
        orjson.dumps(
            {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters or {"type": "object"},
            }
        ).decode()
        for t in use.tools
    )
    if use.choice == "required":
        rule = "You must call at least one function."
    elif use.forced:
        rule = f'You must call the function "{use.choice}".'
    else:
        rule = "Call a function when it helps; otherwise answer in plain text."
    many = "one block per call" if use.parallel else "one block"
    return (
        f"You can call these functions:\n{described}\n\n"
        f"To call a function, answer with {many}, each a JSON object with the function's name "
        f'and its arguments:\n{CALL_OPEN}\n{{"name": "function_name", "arguments": '
        f"{{...}}}}\n{CALL_CLOSE}\n{rule}"
    )


# -- parsing what the model wrote ---------------------------------------------------------------

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TAIL = re.compile(r"\s*\}\s*" + re.escape(CALL_CLOSE))


@dataclass(frozen=True, slots=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallArguments:
    index: int
    text: str


Piece = str | CallStart | CallArguments


class CallParser:
    """Generated text in, content text and call pieces out, as soon as each is certain:
    `CallStart` once a call's name is complete, then its arguments' JSON text in fragments.
    Text that only might open a call is held back until it does or cannot.

    A call after a complete one is held whole until it closes: when the output budget runs
    out inside it (`cut`), the answer ends with the complete calls and none of its pieces has
    reached a streaming client. The first call streams as it comes (cut, there is no usable
    answer anyway)."""

    def __init__(self) -> None:
        self.calls = 0  # calls begun (their CallStart made)
        self.closed = 0  # calls complete (their closing tag read)
        self._held: list[Piece] = []  # pieces of the call in progress after a complete one
        self._buf = ""
        self._state = "text"  # text → head → args → tail → text …
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._between_calls = False  # whitespace after a call is not content
        self._spaced = False  # that whitespace was read (what precedes a further call)

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while self._step(out):
            pass
        return out

    @property
    def holding(self) -> bool:
        """Is a call after a complete one in progress (or maybe opening), held back?"""
        return self.closed > 0 and (self._state != "text" or bool(self._buf) or self._spaced)

    def cut(self) -> bool:
        """The output budget ran out: drop the call in progress if complete calls precede it
        (True), so the answer ends with those; False when there is no such call to drop."""
        if not self.holding:
            return False
        self._held.clear()
        self._buf = ""
        self._state = "text"
        self._spaced = False
        return True

    def finish(self) -> list[Piece]:
        """The end of the text: what is held back goes out as it is."""
        out: list[Piece] = self._held
        self._held = []
        if self._buf:
            if self._state == "args":
                out.append(CallArguments(self.calls - 1, self._buf))
            elif self._state == "text":
                out.append(self._buf)
            elif self._state == "head" and not _could_be_head(self._buf):
                out.append(CALL_OPEN + self._buf)  # never became a call: it was text
            self._buf = ""
        return out

    def _step(self, out: list[Piece]) -> bool:
        buf = self._buf
        if self._state == "text":
            if self._between_calls:
                stripped = buf.lstrip()
                self._spaced = self._spaced or len(stripped) < len(buf)
                buf = self._buf = stripped
                if not buf:
                    return False
                self._between_calls = False
            at = buf.find(CALL_OPEN)
            if at < 0:
                keep = _partial_suffix(buf, CALL_OPEN)
                if len(buf) > keep:
                    out.append(buf[: len(buf) - keep])
                    self._buf = buf[len(buf) - keep :]
                    self._spaced = False  # content came after the calls
                return False
            if at:
                out.append(buf[:at])
            self._buf = buf[at + len(CALL_OPEN) :]
            self._state = "head"
            return True
        if self._state == "head":
            match = _HEAD.match(buf)
            if match is None:
                if not _could_be_head(buf):  # not a call after all: it was text
                    out.append(CALL_OPEN + buf)
                    self._buf = ""
                    self._state = "text"
                return False
            name = orjson.loads(f'"{match.group(1)}"')
            self._emit(out, CallStart(self.calls, "call_" + secrets.token_hex(12), name))
            self.calls += 1
            self._buf = buf[match.end() :]
            self._state = "args"
            self._depth, self._in_string, self._escaped = 0, False, False
            return True
        if self._state == "args":
            if self._depth == 0:  # the value has not begun: whitespace before it is not in it
                buf = self._buf = buf.lstrip()
                if not buf:
                    return False
            end = self._scan(buf)
            if end < 0:
                if buf:
                    self._emit(out, CallArguments(self.calls - 1, buf))
                self._buf = ""
                return False
            if end:
                self._emit(out, CallArguments(self.calls - 1, buf[:end]))
            self._buf = buf[end:]
            self._state = "tail"
            return True
        match = _TAIL.match(buf)
        if match is None:
            return False
        self._buf = buf[match.end() :]
        self._state = "text"
        self._between_calls = True
        self.closed += 1
        self._spaced = False
        out.extend(self._held)
        self._held.clear()
        return bool(self._buf)

    def _emit(self, out: list[Piece], piece: Piece) -> None:
        """A call's piece goes out now, or — a call after a complete one — when it closes."""
        (self._held if self.closed else out).append(piece)

    def _scan(self, text: str) -> int:
        """Where the arguments' JSON value ends in `text` (-1: not yet)."""
        for i, ch in enumerate(text):
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return -1


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that begins `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


def _could_be_head(text: str) -> bool:
    """Could more text still make `text` a call's head?"""
    probe = text.lstrip()
    target = '{"name":'
    squeezed = re.sub(r"\s+", "", probe)
    return target.startswith(squeezed[: len(target)]) and (
        len(squeezed) <= len(target) or squeezed.startswith(target)
    )
