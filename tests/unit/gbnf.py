"""A small GBNF reader for tests: `matches(grammar, text)` (does the grammar accept exactly
`text`?) and `generate(grammar, rng)` (a random string the grammar accepts). It understands
what llama.cpp grammars written by tokendock.inference.grammar.builder use:
literals, character classes, rule references, groups, alternation and the quantifiers
? * + {m} {m,} {m,n}."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache
from typing import cast

MAX_CODE = 0x10FFFF


@dataclass(frozen=True)
class Item:
    kind: str  # "lit" | "cls" | "ref" | "grp"
    value: object  # str | (ranges, negated) | rule name | Alt
    low: int = 1
    high: int | None = 1


Alt = tuple[tuple[Item, ...], ...]


class Grammar:
    def __init__(self, text: str) -> None:
        self.rules: dict[str, Alt] = {}
        for line in text.splitlines():
            if line.strip():
                name, _, body = line.partition(" ::= ")
                reader = _Reader(body)
                self.rules[name.strip()] = reader.alt()
                assert reader.pos == len(body), f"unparsed rest of {line!r}"


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def alt(self) -> Alt:
        seqs = [self.seq()]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            seqs.append(self.seq())
        return tuple(seqs)

    def seq(self) -> tuple[Item, ...]:
        items = []
        self.skip()
        while self.pos < len(self.text) and self.text[self.pos] not in "|)":
            items.append(self.quantified(self.atom()))
            self.skip()
        return tuple(items)

    def atom(self) -> Item:
        ch = self.text[self.pos]
        if ch == '"':
            self.pos += 1
            out = []
            while self.text[self.pos] != '"':
                out.append(self.char())
            self.pos += 1
            return Item("lit", "".join(out))
        if ch == "[":
            self.pos += 1
            negated = self.text[self.pos] == "^"
            self.pos += negated
            ranges = []
            while self.text[self.pos] != "]":
                lo = hi = ord(self.char())
                if self.text[self.pos] == "-" and self.text[self.pos + 1] != "]":
                    self.pos += 1
                    hi = ord(self.char())
                ranges.append((lo, hi))
            self.pos += 1
            return Item("cls", (tuple(ranges), negated))
        if ch == "(":
            self.pos += 1
            inner = self.alt()
            assert self.text[self.pos] == ")"
            self.pos += 1
            return Item("grp", inner)
        name = re.match(r"[a-zA-Z0-9-]+", self.text[self.pos :])
        assert name, f"bad grammar at {self.text[self.pos :]!r}"
        self.pos += len(name.group())
        return Item("ref", name.group())

    def char(self) -> str:
        ch = self.text[self.pos]
        self.pos += 1
        if ch != "\\":
            return ch
        esc = self.text[self.pos]
        self.pos += 1
        size = {"x": 2, "u": 4, "U": 8}.get(esc)
        if size:
            code = int(self.text[self.pos : self.pos + size], 16)
            self.pos += size
            return chr(code)
        return {"n": "\n", "t": "\t", "r": "\r"}.get(esc, esc)

    def quantified(self, item: Item) -> Item:
        rest = self.text[self.pos :]
        if rest[:1] in ("?", "*", "+"):
            self.pos += 1
            low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}[rest[0]]
            return Item(item.kind, item.value, low, high)
        counted = re.match(r"\{(\d+)(,(\d*))?\}", rest)
        if counted:
            self.pos += len(counted.group())
            low = int(counted.group(1))
            high = (
                low
                if not counted.group(2)
                else (int(counted.group(3)) if counted.group(3) else None)
            )
            return Item(item.kind, item.value, low, high)
        return item


ClassSet = tuple[tuple[tuple[int, int], ...], bool]


def _in_class(value: object, ch: str) -> bool:
    ranges, negated = cast(ClassSet, value)
    inside = any(lo <= ord(ch) <= hi for lo, hi in ranges)
    return inside != negated


def matches(grammar_text: str | Grammar, text: str, root: str = "root") -> bool:
    grammar = grammar_text if isinstance(grammar_text, Grammar) else Grammar(grammar_text)

    @cache
    def rule_ends(name: str, pos: int) -> frozenset[int]:
        return alt_ends(grammar.rules[name], pos)

    def alt_ends(alt: Alt, pos: int) -> frozenset[int]:
        out: set[int] = set()
        for seq in alt:
            current = {pos}
            for item in seq:
                current = {end for p in current for end in item_ends(item, p)}
                if not current:
                    break
            out |= current
        return frozenset(out)

    def once(item: Item, pos: int) -> frozenset[int]:
        if item.kind == "lit":
            lit = str(item.value)
            return frozenset({pos + len(lit)}) if text.startswith(lit, pos) else frozenset()
        if item.kind == "cls":
            ok = pos < len(text) and _in_class(item.value, text[pos])
            return frozenset({pos + 1}) if ok else frozenset()
        if item.kind == "ref":
            return rule_ends(str(item.value), pos)
        return alt_ends(cast(Alt, item.value), pos)

    def item_ends(item: Item, pos: int) -> set[int]:
        out: set[int] = {pos} if item.low == 0 else set()
        current: set[int] = {pos}
        seen: set[int] = set()
        count = 0
        while current and (item.high is None or count < item.high):
            count += 1
            current = {end for p in current for end in once(item, p)}
            if item.high is None:
                current -= seen
                seen |= current
            if count >= item.low:
                out |= current
            if count > len(text) + 1 and item.high is None:
                break
        return out

    return len(text) in rule_ends(root, 0)


class TooDeep(Exception):
    pass


POOL = [chr(c) for c in range(0x20, 0x7F)] + ["é", "ß", "中", "😀", "\n", "\t", "\x01"]


def generate(grammar_text: str, rng: random.Random, root: str = "root") -> str:
    """A random string of the grammar (retrying when a draw nests too deep)."""
    grammar = Grammar(grammar_text)

    def alt(value: Alt, depth: int, out: list[str]) -> None:
        if depth > 40:
            raise TooDeep
        for item in rng.choice(value):
            high = item.low + 2 if item.high is None else min(item.high, item.low + 2)
            for _ in range(rng.randint(item.low, high)):
                once(item, depth, out)

    def once(item: Item, depth: int, out: list[str]) -> None:
        if item.kind == "lit":
            out.append(str(item.value))
        elif item.kind == "cls":
            out.append(_pick(item.value, rng))
        elif item.kind == "ref":
            alt(grammar.rules[str(item.value)], depth + 1, out)
        else:
            alt(cast(Alt, item.value), depth + 1, out)

    for _ in range(200):
        out: list[str] = []
        try:
            alt(grammar.rules[root], 0, out)
        except TooDeep:
            continue
        return "".join(out)
    raise AssertionError("could not generate a string within the depth bound")


def _pick(value: object, rng: random.Random) -> str:
    ranges, negated = cast(ClassSet, value)
    if negated or rng.random() < 0.3:
        for _ in range(1000):
            ch = rng.choice(POOL)
            if _in_class(value, ch):
                return ch
        assert not negated, "no character of the pool fits the negated class"
    lo, hi = rng.choice(ranges)
    while True:
        code = rng.randint(lo, min(hi, lo + 200))
        if not 0xD800 <= code <= 0xDFFF:
            return chr(code)
