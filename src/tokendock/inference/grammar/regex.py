"""A JSON-schema `pattern` (a regular expression) as GBNF for the inside of a JSON string.

Supported: literals, `.`, classes `[...]` / `[^...]` with ranges, `\\d \\w \\s \\D \\W \\S` (as
printable-ASCII subsets, in and out of classes), escapes `\\t \\n \\r \\f \\v
\\0 \\xHH \\uHHHH` and escaped punctuation, groups `(...)`, `(?:...)`, `(?P<n>...)`,
`(?<n>...)`, alternation, quantifiers `* + ? {n} {n,} {n,m}` (lazy `?` suffix ignored), and `^` /
`$` only at the start / end. Without `^` (`$`) any text may come before (after) the match, as
JSON Schema's search semantics allow. Everything else (lookarounds, backreferences, `\\b`,
inline flags, `\\p{..}`, possessive quantifiers) raises PatternError.

Each generated string matches the pattern under both Python's `re` and ECMA-262 semantics:
shorthand classes are ASCII subsets, and `.` excludes every line terminator either dialect
knows.
"""

from __future__ import annotations

from tokendock.inference.grammar.terms import complement, json_char_set, normalize

MAX_PATTERN = 1000
MAX_REPEAT = 1000
MAX_NESTED = 1999  # llama.cpp refuses nested repetitions whose counts multiply beyond this
MAX_GROUPS_DEEP = 32  # groups within groups (the parser recurses once per level)

DIGIT = [(0x30, 0x39)]
WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
SPACE = [(0x09, 0x0D), (0x20, 0x20)]
PRINTABLE = [(0x20, 0x7E)]
# Added to a shorthand inside a negated class: Python's \s also matches \x1c-\x1f, and the
# Unicode forms match non-ASCII characters, so the complement is kept to printable ASCII.
NOT_PRINTABLE = [(0x00, 0x1F), (0x7F, 0x10FFFF)]
LINE_ENDS = [(0x0A, 0x0A), (0x0D, 0x0D), (0x85, 0x85), (0x2028, 0x2029)]
SIMPLE_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B, "0": 0x00}


class PatternError(Exception):
    pass


def printable_minus(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    keep = complement(ranges)
    return [
        (max(lo, a), min(hi, b)) for lo, hi in keep for a, b in PRINTABLE if lo <= b and a <= hi
    ]


SHORTHAND = {
    "d": DIGIT,
    "w": WORD,
    "s": SPACE,
    "D": printable_minus(DIGIT),
    "W": printable_minus(WORD),
    "S": printable_minus(SPACE),
}


def pattern_gbnf(pattern: str, any_char: str) -> str:
    """GBNF for the JSON-string contents matching `pattern`; `any_char` is the rule for one
    unconstrained string character (used for the unanchored ends)."""
    if len(pattern) > MAX_PATTERN:
        raise PatternError(f"patterns longer than {MAX_PATTERN} characters are not supported")
    start = pattern.startswith("^")
    end = pattern.endswith("$") and not _escaped(pattern, len(pattern) - 1)
    body = pattern[1 if start else 0 : len(pattern) - 1 if end else len(pattern)]
    parser = _Parser(body)
    inner = parser.alternation()
    if parser.pos != len(body):
        raise PatternError(f"unbalanced ')' at offset {parser.pos}")
    parts = ([] if start else [f"{any_char}*"]) + [f"( {inner} )"]
    return " ".join(parts + ([] if end else [f"{any_char}*"]))


def _escaped(text: str, index: int) -> bool:
    count = 0
    while index - 1 - count >= 0 and text[index - 1 - count] == "\\":
        count += 1
    return count % 2 == 1


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.seen = 1  # the largest repetition weight in the group being read
        self.depth = 0  # groups open around the current position
        self.atom_weight = 1  # the largest repetition weight inside the last atom

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        if self.pos >= len(self.text):
            raise PatternError("the pattern ends unexpectedly")
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def alternation(self) -> str:
        alts = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            alts.append(self.sequence())
        return " | ".join(a or '""' for a in alts)

    def sequence(self) -> str:
        items: list[str] = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            text, weight = self.quantified(atom, self.atom_weight)
            self.seen = max(self.seen, weight)
            items.append(text)
        return " ".join(items)

    def atom(self) -> str:
        ch = self.take()
        self.atom_weight = 1
        if ch == "(":
            self._group_prefix()
            if self.depth >= MAX_GROUPS_DEEP:
                raise PatternError(f"groups nested more than {MAX_GROUPS_DEEP} deep")
            outer, self.seen = self.seen, 1
            self.depth += 1
            inner = self.alternation()
            self.depth -= 1
            self.atom_weight, self.seen = self.seen, outer
            if self.take() != ")":
                raise PatternError("unbalanced '('")
            return f"( {inner} )"
        if ch == "[":
            return _chars(self._class())
        if ch == ".":
            return _chars(complement(LINE_ENDS))
        if ch == "\\":
            return _chars(self._escape(in_class=False))
        if ch in "^$":
            raise PatternError(f"'{ch}' is only supported at the start / end of the pattern")
        if ch in "*+?":
            raise PatternError(f"nothing to repeat before '{ch}' at offset {self.pos - 1}")
        return _chars([(ord(ch), ord(ch))])

    def _group_prefix(self) -> None:
        if self.peek() != "?":
            return
        self.pos += 1
        kind = self.take()
        if kind == ":":
            return
        if kind == "P" and self.peek() == "<":
            self.pos += 1
            kind = "<"
        if kind == "<" and self.peek() not in ("=", "!"):
            close = self.text.find(">", self.pos)
            if close < 0:
                raise PatternError("unterminated group name")
            self.pos = close + 1
            return
        raise PatternError("lookarounds, inline flags and other '(?' groups are not supported")

    def quantified(self, atom: str, inner: int) -> tuple[str, int]:
        """`atom` with its quantifier; `inner` is the largest repetition weight inside it."""
        ch = self.peek()
        factor = 1
        if ch in ("*", "+", "?"):
            self.pos += 1
            suffix = ch
        elif ch == "{" and self._is_counted():
            low, high = self._counts()
            suffix = f"{{{low},{'' if high is None else high}}}"
            factor = high if high else max(low, 1)
        else:
            return atom, inner
        if self.peek() == "?":
            self.pos += 1  # lazy: the same language
        elif self.peek() in ("+", "*", "{"):
            raise PatternError("possessive or stacked quantifiers are not supported")
        if inner * factor > MAX_NESTED:
            raise PatternError(f"nested repetition counts multiply beyond {MAX_NESTED}")
        return f"( {atom} ){suffix}", inner * factor

    def _is_counted(self) -> bool:
        close = self.text.find("}", self.pos)
        inside = self.text[self.pos + 1 : close] if close > 0 else ""
        return bool(inside) and all(c.isdigit() or c == "," for c in inside)

    def _counts(self) -> tuple[int, int | None]:
        close = self.text.index("}", self.pos)
        inside = self.text[self.pos + 1 : close]
        self.pos = close + 1
        low_s, _, high_s = inside.partition(",")
        if inside.count(",") > 1 or not low_s:
            raise PatternError(f"unsupported quantifier {{{inside}}}")
        low = int(low_s)
        high = low if "," not in inside else (int(high_s) if high_s else None)
        if high is not None and high < low:
            raise PatternError(f"quantifier {{{inside}}} has max < min")
        if low > MAX_REPEAT:
            raise PatternError(f"repetition counts above {MAX_REPEAT} are not supported")
        if high is not None and high > MAX_REPEAT:
            high = MAX_REPEAT  # fewer repetitions still match
        return low, high

    def _class(self) -> list[tuple[int, int]]:
        negate = self.peek() == "^"
        if negate:
            self.pos += 1
        if self.peek() == "]":
            raise PatternError("a class starting with ']' is read differently by regex dialects")
        ranges: list[tuple[int, int]] = []
        while True:
            ch = self.take()
            if ch == "]":
                break
            if ch == "\\":
                if self.peek() in SHORTHAND:
                    # In a negated class a shorthand stands for a superset, so the complement
                    # stays inside what every dialect allows.
                    ranges += SHORTHAND[self.take()] + (NOT_PRINTABLE if negate else [])
                    continue
                first = self._escape(in_class=True)[0][0]
            else:
                first = ord(ch)
            last = first
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                nxt = self.take()
                last = self._escape(in_class=True)[0][0] if nxt == "\\" else ord(nxt)
                if last < first:
                    raise PatternError("a class range is out of order")
            ranges.append((first, last))
        return complement(ranges) if negate else normalize(ranges)

    def _escape(self, *, in_class: bool) -> list[tuple[int, int]]:
        ch = self.take()
        if ch in SHORTHAND and not in_class:
            return SHORTHAND[ch]
        if ch in SIMPLE_ESCAPES:
            if ch == "0" and self.peek().isdigit():
                raise PatternError("octal escapes are not supported")
            code = SIMPLE_ESCAPES[ch]
            return [(code, code)]
        if ch in ("x", "u"):
            size = 2 if ch == "x" else 4
            digits = self.text[self.pos : self.pos + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise PatternError(f"malformed \\{ch} escape")
            self.pos += size
            code = int(digits, 16)
            return [(code, code)]
        if ch.isalnum() or ch == "_" or not ch.isascii():
            raise PatternError(f"the escape '\\{ch}' is not supported")
        return [(ord(ch), ord(ch))]


def _chars(ranges: list[tuple[int, int]]) -> str:
    gbnf = json_char_set(ranges)
    if gbnf is None:
        raise PatternError("a character class matches nothing")
    return gbnf
