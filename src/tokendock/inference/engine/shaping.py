"""One choice of the embedded engine, from engine events to the backend's typed `Delta`s:
tool calls parsed out of the text (tools.py), logprobs in the endpoint's shape (chat's
`content` entries with `refusal: []` — strict clients such as the Go SDK read null as missing —
or legacy completions' parallel lists), the finish reason a call implies.

The budget cut: when the output budget runs out (`length`) inside a call after complete ones,
the call in progress is dropped (the parser held it, and the logprobs of its tokens here) and
the choice ends with the complete calls, `tool_calls` (`function_call` for the legacy form).
Its tokens are still billed: the engine's count is not touched."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tokendock.inference.backend import Delta, Event, Finish, Kind
from tokendock.inference.engine.tools import CallArguments, CallParser, CallStart, Piece
from tokendock.inference.structured import ToolUse
from tokendock.inference.vocabulary import TokenLogprob

JSON = dict[str, Any]


class ChoiceShaper:
    def __init__(self, index: int, kind: Kind, tools: ToolUse | None, logprobs: bool):
        self.index = index
        self._kind = kind
        self._legacy = tools is not None and tools.legacy
        self._parser = CallParser() if tools is not None and tools.active else None
        self._logprobs = logprobs
        self._offset = 0  # characters of this choice so far (legacy text_offset)
        self._held: list[TokenLogprob] = []  # logprobs of a call the parser holds back

    def prefix(self, text: str, scored: Sequence[TokenLogprob] = ()) -> Delta | None:
        """The echoed prompt (legacy completions), with its tokens' logprobs when asked."""
        if not text and not scored:
            return None
        logprobs = self._shape(scored) if self._logprobs else None
        self._offset = len(text)
        return Delta(self.index, text, logprobs=logprobs)

    def text(self, text: str, entries: Sequence[TokenLogprob]) -> list[Delta]:
        parser = self._parser
        if parser is None:
            logprobs = self._shape(entries) if self._logprobs and entries else None
            return self._deltas([text], logprobs)
        closed = parser.closed
        pieces: list[Piece] = parser.feed(text)
        # A token that closes a held call goes out with it, even if it also opens the next.
        hold = parser.holding and parser.closed == closed
        return self._deltas(pieces, self._release(entries, hold))

    def finish(self, reason: str, stop_sequence: str | None = None) -> list[Event]:
        out: list[Event] = []
        parser = self._parser
        if parser is not None:
            calls = "function_call" if self._legacy else "tool_calls"
            if reason == "length" and parser.cut():
                self._held.clear()  # the cut call's logprobs go with it
                return [Finish(self.index, calls, stop_sequence)]
            out.extend(self._deltas(parser.finish(), self._release((), False)))
            if parser.calls and reason == "stop":
                reason = calls
        out.append(Finish(self.index, reason, stop_sequence))
        return out

    def _release(self, entries: Sequence[TokenLogprob], hold: bool) -> JSON | None:
        """The logprobs to send with this text: none while the parser holds a call back (they
        go out with it, or are dropped with it when cut), else those held and `entries`."""
        if not self._logprobs:
            return None
        if hold:
            self._held.extend(entries)
            return None
        if self._held:
            entries, self._held = [*self._held, *entries], []
        return self._shape(entries) if entries else None

    def _deltas(self, pieces: list[Piece], logprobs: JSON | None) -> list[Delta]:
        out: list[Delta] = []
        text = ""
        calls: list[JSON] = []
        for piece in pieces:
            if isinstance(piece, str):
                text += piece
            elif isinstance(piece, CallStart):
                calls.append(
                    {
                        "index": piece.index,
                        "id": piece.id,
                        "type": "function",
                        "function": {"name": piece.name, "arguments": ""},
                    }
                )
            elif isinstance(piece, CallArguments):
                calls.append({"index": piece.index, "function": {"arguments": piece.text}})
        if text or calls or logprobs is not None:
            if self._legacy and calls:
                out.append(Delta(self.index, text, logprobs=logprobs, function_call=_legacy(calls)))
            else:
                out.append(Delta(self.index, text, tuple(calls) or None, logprobs))
        return out

    def _shape(self, entries: Sequence[TokenLogprob]) -> JSON:
        if self._kind == "chat":
            return {"content": [_chat_entry(e) for e in entries], "refusal": []}
        offsets = []
        for e in entries:
            offsets.append(self._offset)
            self._offset += len(e.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [_finite(e.logprob) for e in entries],
            "top_logprobs": [
                None if math.isnan(e.logprob) else {t: lp for t, lp, _ in e.top} for e in entries
            ],
            "text_offset": offsets,
        }


def _chat_entry(e: TokenLogprob) -> JSON:
    return {
        "token": e.token,
        "logprob": e.logprob,
        "bytes": list(e.raw),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(b)} for t, lp, b in e.top],
    }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _legacy(calls: list[JSON]) -> JSON:
    """Tool-call pieces as the deprecated `function_call` delta (one call: `parallel` is off)."""
    name = next((c["function"]["name"] for c in calls if "id" in c), None)
    arguments = "".join(c["function"]["arguments"] for c in calls)
    return {"name": name, "arguments": arguments} if name is not None else {"arguments": arguments}
