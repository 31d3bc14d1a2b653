"""Exact token ids from llama.cpp's vocabulary, in time linear in the text, stoppable.

Why not one `llama_tokenize` call per prompt: llama.cpp first carves "partition tokens" out of
the text (user-defined tokens such as "\\n", "  " or "<b>" always; control tokens such as
<eos> only when parsing special tokens), and each carve walks its fragment list from the start:
the cost is quadratic in their number (80,000 newlines took 50 s; 20,000 empty chat turns 25 s).
So `Partition` finds the same fragments in Python (same order: longest token first, leftmost
occurrences, same whitespace stripping), and the text goes to llama.cpp in chunks cut right
after a carved token. A cut there is a boundary of llama.cpp's own partition of the whole text,
so the ids are exactly those of one call (tests/integration/test_tokenizer.py compares them),
each call sees a bounded number of partition tokens, and a cancel flag is checked between
calls: an abandoned request stops within one chunk.

Message text is tokenized with `special=False` (a typed "<eos>" is text). In the template's
own text the control tokens its source writes are carved here and emitted as ids; the text
between them goes to llama.cpp without special parsing and, as templates repeat themselves
(every turn the same markers and role names), its ids are cached. So llama.cpp never parses
control tokens, and never walks its list of thousands of them (6,242 `<unusedN>` in Gemma 3).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

# A chunk ends after this many carved tokens or characters (at the next carved token).
CHUNK_TOKENS = 64
CHUNK_CHARS = 4096
# Template chunks whose ids are remembered, and the longest one remembered.
CACHE_ENTRIES = 4096
CACHE_CHARS = 512

ATTR_UNKNOWN = 1 << 0
ATTR_CONTROL = 1 << 3
ATTR_USER_DEFINED = 1 << 4
ATTR_LSTRIP = 1 << 7
ATTR_RSTRIP = 1 << 8
WHITESPACE = " \t\n\v\f\r"  # C isspace(), what llama.cpp strips

Fragment = tuple[int, int, int]  # start, end, token id (-1: text for the tokenizer proper)


class TokenizeCancelled(Exception):
    """The request that wanted these tokens went away."""


class Partition:
    """The tokens llama.cpp carves out before tokenizing, and how to carve them the same way."""

    def __init__(self, tokens: Iterable[tuple[int, str, int]]):
        """`tokens`: (id, text, attributes) of every token llama.cpp carves in this mode."""
        # llama.cpp sorts its special-token cache by text length, longest first.
        self._order = sorted(
            ((t, i, a) for i, t, a in tokens if t), key=lambda entry: (-len(entry[0]), entry[1])
        )
        self._rstrip = {i for _, i, a in self._order if a & ATTR_RSTRIP}

    def fragments(self, text: str, cancel: threading.Event | None = None) -> list[Fragment]:
        frags: list[Fragment] = [(0, len(text), -1)]
        for token, tid, attr in self._order:
            _check(cancel)
            if token not in text:
                continue
            size = len(token)
            out: list[Fragment] = []
            for n, (start, end, kind) in enumerate(frags):
                if n % 4096 == 4095:
                    _check(cancel)
                if kind >= 0 or end - start < size:
                    out.append((start, end, kind))
                    continue
                pos = start
                while (hit := text.find(token, pos, end)) >= 0:
                    left = hit
                    if attr & ATTR_LSTRIP:
                        while left > pos and text[left - 1] in WHITESPACE:
                            left -= 1
                    if left > pos:
                        out.append((pos, left, -1))
                    out.append((hit, hit + size, tid))
                    pos = hit + size
                    if attr & ATTR_RSTRIP:
                        while pos < end and text[pos] in WHITESPACE:
                            pos += 1
                if pos < end:
                    out.append((pos, end, -1))
            frags = out
        return frags

    def chunks(self, text: str, cancel: threading.Event | None = None) -> list[str]:
        """The text cut right after carved tokens, each chunk holding a bounded number."""
        if len(text) <= 64:  # too short to hold many partition tokens: not worth scanning
            return [text] if text else []
        out: list[str] = []
        start = carved = 0
        for _, end, kind in self.fragments(text, cancel):
            if kind < 0:
                continue
            carved += 1
            if (carved >= CHUNK_TOKENS or end - start >= CHUNK_CHARS) and kind not in self._rstrip:
                out.append(text[start:end])
                start, carved = end, 0
        if start < len(text):
            out.append(text[start:])
        return out


class Tokenizer:
    """Tokenizes with a loaded llama.cpp vocabulary; thread-safe (the vocabulary is read-only)."""

    def __init__(self, llama_cpp: Any, vocab: Any, template_source: str = ""):
        self._lib = llama_cpp
        self._vocab = vocab
        text_tokens: list[tuple[int, str, int]] = []
        special_tokens: list[tuple[int, str, int]] = []
        for tid in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            attr = llama_cpp.llama_vocab_get_attr(vocab, tid)
            if not attr & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN):
                continue
            raw = llama_cpp.llama_vocab_get_text(vocab, tid)
            token = raw.decode("utf-8", "replace") if raw else ""
            if not attr & (ATTR_CONTROL | ATTR_UNKNOWN):
                text_tokens.append((tid, token, attr))
                special_tokens.append((tid, token, attr))
            elif token in template_source:
                # Template text holds only the control tokens its source writes (or BOS/EOS,
                # which the source names and `template_source` must include).
                special_tokens.append((tid, token, attr))
        self._text = Partition(text_tokens)
        self._special = Partition(special_tokens)
        self._cache: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.calls = 0  # llama_tokenize calls, for tests and metrics
        self.tokens = 0

    def encode(
        self, text: str, *, special: bool, cancel: threading.Event | None = None
    ) -> list[int]:
        """Token ids of `text` (no BOS). `special`: parse control tokens (template text only)."""
        return self.encode_pieces([(text, special)], cancel)

    def encode_pieces(
        self, pieces: Iterable[tuple[str, bool]], cancel: threading.Event | None = None
    ) -> list[int]:
        """Token ids of consecutive stretches of text, each (text, parse special tokens)."""
        ids: list[int] = []
        for text, special in pieces:
            if special:
                ids += self._template_text(text, cancel)
                continue
            for chunk in self._text.chunks(text, cancel):
                _check(cancel)
                ids += self._call(chunk.encode("utf-8"))
        return ids

    def _template_text(self, text: str, cancel: threading.Event | None) -> list[int]:
        """Carved tokens are emitted as they are; the text between them (a role name, a
        newline...) is tokenized once and remembered: templates repeat themselves."""
        ids: list[int] = []
        for n, (start, end, kind) in enumerate(self._special.fragments(text, cancel)):
            if kind >= 0:
                ids.append(kind)
                continue
            if n % CHUNK_TOKENS == 0:
                _check(cancel)
            stretch = text[start:end]
            cached = self._cache.get(stretch)
            if cached is None:
                cached = self._call(stretch.encode("utf-8"))
                if len(stretch) <= CACHE_CHARS and len(self._cache) < CACHE_ENTRIES:
                    self._cache[stretch] = cached
            ids += cached
        return ids

    def _call(self, data: bytes) -> list[int]:
        """One llama_tokenize call without special-token parsing (no control tokens result)."""
        lib = self._lib
        size = len(data) + 8  # a token covers at least one byte (+ an SPM space prefix)
        buf = (lib.llama_token * size)()
        n = lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, False)
        if n < 0:
            size = -n
            buf = (lib.llama_token * size)()
            n = lib.llama_tokenize(self._vocab, data, len(data), buf, size, False, False)
            if n < 0:
                raise RuntimeError(f"llama_tokenize failed ({n})")
        with self._lock:
            self.calls += 1
            self.tokens += n
        return list(buf[:n])


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise TokenizeCancelled
