"""How many parse stacks llama.cpp's grammar engine may hold: an upper bound, from the GBNF.

llama.cpp follows a grammar with a set of stacks, one per way the text so far can continue
(each stack a path of rule positions ending at a terminal). Its cost grows with that number:
accepting a character compares every new stack with the others (O(stacks²)), and masking the
candidates runs every stack over them. A schema that keeps thousands of stacks alive stalls the
one engine thread for seconds per token, and a C call cannot be interrupted — so the bound is
checked before admission (grammar_bounds.py refuses what is over it).

For each expression (a rule, a group, an atom with its quantifier) this module computes:

    first     the characters it can start with (a 129-bit mask: ASCII, and one bit for the rest)
    nullable  it can match nothing
    start     stacks made on entering it (llama.cpp expands every alternative at once)
    width     the most stacks alive inside it at any point of its text
    endw      the most stacks alive inside it at a point where it may also be complete

Alternatives whose first characters overlap may all be alive after that character: their
widths add up; alternatives that start differently are alive together only at their entry, and
so are alternatives that start with different literal texts (neither a prefix of the other:
object keys, tool names, a trie's branches) once past their common prefix, where each holds
one stack. `exclusive` rules are ones whose overlapping alternatives the generator knows to
part within such a prefix (the chained runs of a long string, grammar_terms.repeat).
A sequence holds one part at a time, plus the entry of what follows where a part may end. A
repetition loops through the same positions (llama.cpp deduplicates equal stacks), except a
counted repetition whose item can split the same text in more than one way — a nullable item,
or, in rules made from a user's `pattern` (`careful`), an item of varying length whose first
characters also occur later in it: then each count is a different stack. The JSON the other
rules describe splits one way only (values are delimited), so their counted repetitions loop.

Recursion is a fixpoint: a rule's numbers grow until stable; one still growing after `PASSES`
passes (a recursive union of overlapping branches: stacks double per level) is unbounded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

UNBOUNDED = 1 << 40
PASSES = 24
ALL_CHARS = (1 << 129) - 1
_NON_ASCII = 1 << 128

_TOKEN = re.compile(
    r'\s*(?:(?P<lit>"(?:\\.|[^"\\])*")|(?P<cls>\[(?:\\.|[^\]\\])*\])|(?P<name>[a-zA-Z0-9-]+)'
    r"|(?P<quant>[?*+]|\{\d+(?:,\d*)?\})|(?P<punct>[()|]))"
)
_ESCAPES = {"n": 0x0A, "t": 0x09, "r": 0x0D}


@dataclass(frozen=True, slots=True)
class Cost:
    first: int
    nullable: bool
    start: int
    width: int
    endw: int
    fixed: int | None = None  # the length of every text it matches, when that is one number
    mid: int = 0  # characters that can occur after the first one
    head: str = ""  # the literal text every match starts with (GBNF-escaped), if any


EMPTY = Cost(0, True, 0, 0, 0, 0)


# --- reading GBNF -----------------------------------------------------------------------------

Node = tuple[object, ...]  # ("lit", text) | ("cls", mask) | ("ref", name) | ("alt", [[...]])


def _chars(text: str) -> list[int]:
    """The code points of a GBNF literal's or class's inside (escapes resolved)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ord(ch))
            i += 1
            continue
        kind = text[i + 1]
        size = {"x": 2, "u": 4, "U": 8}.get(kind)
        if size:
            out.append(int(text[i + 2 : i + 2 + size], 16))
            i += 2 + size
        else:
            out.append(_ESCAPES.get(kind, ord(kind)))
            i += 2
    return out


def _bit(code: int) -> int:
    return 1 << code if code < 128 else _NON_ASCII


def _class_mask(inside: str) -> int:
    negated = inside.startswith("^")
    codes = _chars(inside[1:] if negated else inside)
    mask, i = 0, 0
    while i < len(codes):
        lo = hi = codes[i]
        if i + 2 < len(codes) and codes[i + 1] == ord("-"):
            hi = codes[i + 2]
            i += 3
        else:
            i += 1
        for code in range(lo, min(hi, 127) + 1):
            mask |= 1 << code
        if hi >= 128:
            mask |= _NON_ASCII
    # A negated class's complement: every character it leaves, non-ASCII always (conservative).
    return ((ALL_CHARS & ~mask) | _NON_ASCII) if negated else mask


def parse(body: str) -> Node:
    tokens: list[tuple[str, str]] = []
    pos, body = 0, body.rstrip()
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot read GBNF at {body[pos:]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return _alternation(tokens, 0)[0]


def _alternation(tokens: list[tuple[str, str]], pos: int) -> tuple[Node, int]:
    alts: list[list[Node]] = [[]]
    while pos < len(tokens) and tokens[pos] != ("punct", ")"):
        kind, text = tokens[pos]
        pos += 1
        if (kind, text) == ("punct", "|"):
            alts.append([])
            continue
        atom: Node
        if (kind, text) == ("punct", "("):
            atom, pos = _alternation(tokens, pos)
            pos += 1  # the ')'
        elif kind == "lit":
            atom = ("lit", text[1:-1])
        elif kind == "cls":
            atom = ("cls", _class_mask(text[1:-1]))
        else:
            atom = ("ref", text)
        if pos < len(tokens) and tokens[pos][0] == "quant":
            atom = ("rep", atom, tokens[pos][1])
            pos += 1
        alts[-1].append(atom)
    return ("alt", alts), pos


# --- the numbers ------------------------------------------------------------------------------


def _cap(value: int) -> int:
    return min(value, UNBOUNDED)


class Estimator:
    """Per-rule costs over a whole grammar (`bodies`: rule name → GBNF body). `careful`: rules
    whose counted repetitions may split text ambiguously (patterns). `tick` is called as work
    is done (a deadline check)."""

    def __init__(
        self,
        bodies: dict[str, str],
        careful: set[str],
        tick: Callable[[], None] = lambda: None,
        exclusive: set[str] | None = None,
    ) -> None:
        self._nodes = {name: parse(body) for name, body in bodies.items()}
        self._careful = careful
        self._exclusive = exclusive or set()
        self._tick = tick
        self.costs: dict[str, Cost] = dict.fromkeys(self._nodes, EMPTY)
        self.unbounded: set[str] = set()
        self._rule = ""

    def run(self) -> None:
        changed = set(self._nodes)
        for _ in range(PASSES):
            changed = set()
            for name, node in self._nodes.items():
                self._tick()
                self._rule = name
                cost = self._node(node)
                if cost != self.costs[name]:
                    self.costs[name] = cost
                    changed.add(name)
            if not changed:
                return
        self.unbounded = changed

    def width(self, name: str) -> int:
        return UNBOUNDED if name in self.unbounded else self.costs[name].width

    def _node(self, node: Node) -> Cost:
        kind = node[0]
        if kind == "lit":
            codes = _chars(str(node[1]))
            if not codes:
                return EMPTY
            mid = 0
            for code in codes[1:]:
                mid |= _bit(code)
            return Cost(_bit(codes[0]), False, 1, 1, 0, len(codes), mid, str(node[1]))
        if kind == "cls":
            return Cost(cast(int, node[1]), False, 1, 1, 0, 1)
        if kind == "ref":
            name = str(node[1])
            return self.costs.get(name, EMPTY)
        if kind == "rep":
            return self._repeat(self._node(cast(Node, node[1])), str(node[2]))
        alts = [self._sequence(seq) for seq in cast(list[list[Node]], node[1])]
        if len(alts) == 1:
            return alts[0]
        return _alternatives(alts, exclusive=self._rule in self._exclusive)

    def _sequence(self, items: list[Node]) -> Cost:
        costs = [self._node(item) for item in items]
        if not costs:
            return EMPTY
        # follow[i]: stacks made entering items i.. (through the nullable ones).
        follow = [0] * (len(costs) + 1)
        for i in range(len(costs) - 1, -1, -1):
            follow[i] = _cap(costs[i].start + (follow[i + 1] if costs[i].nullable else 0))
        first, mid, width = 0, 0, 0
        fixed: int | None = 0
        leading = True  # every item so far may be empty
        written = False  # some item so far may be non-empty
        for i, c in enumerate(costs):
            if leading:
                first |= c.first
            mid |= c.mid | (c.first if written else 0)
            leading = leading and c.nullable
            written = written or c.fixed != 0
            width = max(width, c.width, _cap(c.endw + follow[i + 1]))
            fixed = None if fixed is None or c.fixed is None else fixed + c.fixed
        endw = 0
        for i in range(len(costs) - 1, -1, -1):
            endw = max(endw, _cap(costs[i].endw + follow[i + 1]))
            if not costs[i].nullable:
                break
        nullable = all(c.nullable for c in costs)
        head = "" if costs[0].nullable else costs[0].head
        return Cost(first, nullable, follow[0], width, endw, fixed, mid, head)

    def _repeat(self, item: Cost, quant: str) -> Cost:
        if quant == "?":
            low, high = 0, 1
        elif quant in ("*", "+"):
            low, high = (0 if quant == "*" else 1), None
        else:
            low_s, comma, high_s = quant[1:-1].partition(",")
            low = int(low_s)
            high = low if not comma else (int(high_s) if high_s else None)
        if high == 0:
            return EMPTY
        nullable = low == 0 or item.nullable
        mid = item.mid | (item.first if high != 1 else 0)
        fixed = item.fixed * low if item.fixed is not None and low == high else None
        start = item.start
        width = max(item.width, _cap(item.endw + item.start))
        endw = _cap(item.endw + item.start) if high != 1 else item.endw
        if nullable:
            endw = max(endw, start)
        copies = low + 1 if high is None else high
        if copies > 1 and self._ambiguous(item):
            # Each count is a rule position of its own: as many stacks as counts may be alive.
            width, endw = _cap(width * copies), _cap(endw * copies)
        return Cost(item.first, nullable, start, width, endw, fixed, mid)

    def _ambiguous(self, item: Cost) -> bool:
        if item.nullable:
            return True
        if self._rule not in self._careful or item.fixed is not None:
            return False
        return bool(item.first & item.mid)


def _alternatives(alts: list[Cost], *, exclusive: bool) -> Cost:
    first = mid = 0
    for a in alts:
        first |= a.first
        mid |= a.mid
    start = _cap(sum(a.start for a in alts))
    fixed = alts[0].fixed if all(a.fixed == alts[0].fixed for a in alts) else None
    nullable = any(a.nullable for a in alts)
    entry = start if nullable else 0
    headed = [a for a in alts if a.head]
    loose = [a for a in alts if not a.head]
    if exclusive:
        groups = [[a] for a in alts]
        loose = []
    else:
        groups = _prefix_groups(headed)
    # Alive together past a first character: one group of literal-headed alternatives (heads
    # related by prefix) and every alternative without a literal head that starts with it.
    width, endw = start, entry
    for group in groups:
        mask = 0
        for a in group:
            mask |= a.first
        others = [a for a in loose if a.first & mask]
        width = max(width, _cap(sum(a.width for a in group) + sum(a.width for a in others)))
        if len(group) + len(others) == 1:
            endw = max(endw, group[0].endw)
        else:
            endw = max(endw, _cap(sum(a.width for a in group) + sum(a.width for a in others)))
    bits = 0
    for a in loose:
        bits |= a.first
    while bits:
        low = bits & -bits
        bits ^= low
        alive = [a for a in loose if a.first & low]
        best = max((sum(a.width for a in g) for g in groups if _group_first(g) & low), default=0)
        total = _cap(sum(a.width for a in alive) + best)
        width = max(width, total)
        endw = max(endw, alive[0].endw if len(alive) == 1 and not best else total)
    return Cost(first, nullable, start, width, endw, fixed, mid)


def _group_first(group: list[Cost]) -> int:
    mask = 0
    for a in group:
        mask |= a.first
    return mask


def _prefix_groups(headed: list[Cost]) -> list[list[Cost]]:
    """Alternatives with literal heads, grouped so that heads where one is a prefix of another
    share a group (sorted order puts a head's extensions right after it)."""
    groups: list[list[Cost]] = []
    lead = None
    for a in sorted(headed, key=lambda c: c.head):
        if lead is not None and a.head.startswith(lead):
            groups[-1].append(a)
        else:
            groups.append([a])
            lead = a.head
    return groups
