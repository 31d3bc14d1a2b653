"""GBNF building blocks: the rule store, literals, character classes, JSON primitives, integer
ranges and string formats. Pure text; llama.cpp parses the result (grammar.py assembles it)."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_CODEPOINT = 0x10FFFF
SURROGATES = (0xD800, 0xDFFF)
# Whitespace between JSON tokens: nothing, one space, or one newline plus a bounded indent, so a
# model sampling at temperature 1 cannot pad the document forever.
WS = '( " " | "\\n" [ \\t]{0,24} )?'
MAX_DIGITS = 16  # integer digits the number grammars produce (bounds beyond are "unbounded")

HEX = "[0-9a-fA-F]"
PRIMITIVES: dict[str, str] = {
    "ws": WS,
    # One character of a JSON string: anything but '"', '\' and control characters, or an
    # escape; \u escapes never name a surrogate, so each `json-char` is exactly one code point
    # (minLength / maxLength count code points).
    "json-char": (
        '[^"\\\\\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" ( [0-9a-cA-Ce-fE-F] '
        + f"{HEX} {HEX} {HEX} | [dD] [0-7] {HEX} {HEX} ) )"
    ),
    "json-string": '"\\"" json-char* "\\""',
    "json-int-part": '"0" | [1-9] [0-9]{0,15}',
    "json-integer": '"-"? json-int-part',
    "json-number": '"-"? json-int-part ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?',
    "json-boolean": '"true" | "false"',
    "json-null": '"null"',
    "json-value": (
        "json-object | json-array | json-string | json-number | json-boolean | json-null"
    ),
    "json-member": 'json-string ":" ws json-value',
    "json-object": '"{" ws ( json-member ( "," ws json-member )* ws )? "}"',
    "json-array": '"[" ws ( json-value ( "," ws json-value )* ws )? "]"',
    # String formats (the text between the quotes).
    "fmt-date": (
        '[1-9] [0-9]{3} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )'
        ' | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" )'
        ' | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )'
    ),
    "fmt-time": (
        '( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )?'
        ' ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )'
    ),
    "fmt-date-time": 'fmt-date "T" fmt-time',
    "fmt-uuid": ' "-" '.join(f"{HEX}{{{n}}}" for n in (8, 4, 4, 4, 12)),
    "fmt-ipv4": 'fmt-octet "." fmt-octet "." fmt-octet "." fmt-octet',
    "fmt-octet": '"25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9]',
    "fmt-label": "[a-zA-Z0-9] ( [a-zA-Z0-9-]{0,61} [a-zA-Z0-9] )?",
    # The last label starts with a letter: URL parsers read an all-digit one as an IPv4 part.
    "fmt-tld": "[a-zA-Z] ( [a-zA-Z0-9-]{0,61} [a-zA-Z0-9] )?",
    "fmt-hostname": '( fmt-label "." ){0,3} fmt-tld',
    "fmt-email": '[a-zA-Z0-9!#$%&\'*+/=?^_`{|}~-]{1,64} "@" ( fmt-label "." ){1,3} fmt-tld',
    # http(s) URLs only: a subset of URIs that URL validators such as pydantic's HttpUrl accept.
    "fmt-uri": (
        '"http" "s"? "://" fmt-hostname ( [/?#] '
        + f'( [a-zA-Z0-9._~:/?#@!$&\'()*+,;=-] | "%" {HEX} {HEX} ){{0,512}} )?'
    ),
}
DEPENDS: dict[str, tuple[str, ...]] = {
    "json-string": ("json-char",),
    "json-integer": ("json-int-part",),
    "json-number": ("json-int-part",),
    "json-value": ("json-object", "json-array", "json-string", "json-number", "json-boolean",
                   "json-null"),
    "json-member": ("json-string", "ws", "json-value"),
    "json-object": ("ws", "json-member"),
    "json-array": ("ws", "json-value"),
    "fmt-date-time": ("fmt-date", "fmt-time"),
    "fmt-ipv4": ("fmt-octet",),
    "fmt-hostname": ("fmt-label", "fmt-tld"),
    "fmt-email": ("fmt-label", "fmt-tld"),
    "fmt-uri": ("fmt-hostname",),
}  # fmt: skip
# Formats we enforce: the rule, and the shortest / longest text it produces (so minLength /
# maxLength next to a format can be checked rather than ignored).
FORMATS: dict[str, tuple[str, int, int]] = {
    "date": ("fmt-date", 10, 10),
    "time": ("fmt-time", 9, 21),
    "date-time": ("fmt-date-time", 20, 32),
    "uuid": ("fmt-uuid", 36, 36),
    "ipv4": ("fmt-ipv4", 7, 15),
    "hostname": ("fmt-hostname", 1, 255),
    "email": ("fmt-email", 5, 320),
    "uri": ("fmt-uri", 8, 8 + 255 + 1 + 512 * 3),
}
# Formats a validator may assert that we cannot generate: refused rather than ignored. Any
# other format name is an annotation only (JSON Schema 2020-12) and is ignored.
UNENFORCEABLE_FORMATS = frozenset(
    {"ipv6", "uri-reference", "iri", "iri-reference", "idn-email", "idn-hostname",
     "uri-template", "json-pointer", "relative-json-pointer", "regex", "duration"}
)  # fmt: skip

_NAME_RE = re.compile(r"[^a-zA-Z0-9-]+")


class Rules:
    """Named GBNF rules. Equal bodies share one name; names never collide. `origins`: where in
    the request each schema's rule came from (to name it in a 400); `careful`: rules made from a
    user's regex, which may be ambiguous; `exclusive`: rules whose alternatives part within a
    bounded prefix (grammar_stacks.py)."""

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self.origins: dict[str, str] = {}
        self.careful: set[str] = set()
        self.exclusive: set[str] = set()
        self._next: dict[str, int] = {}  # the next suffix to try per base name

    def copy(self) -> Rules:
        other = Rules()
        other.bodies = dict(self.bodies)
        other._by_body = dict(self._by_body)
        other.origins = dict(self.origins)
        other.careful = set(self.careful)
        other.exclusive = set(self.exclusive)
        other._next = dict(self._next)
        return other

    def add(self, hint: str, body: str) -> str:
        if body in self._by_body:
            return self._by_body[body]
        name = self.reserve(hint)
        self.define(name, body)
        return name

    def reserve(self, hint: str) -> str:
        base = _NAME_RE.sub("-", hint).strip("-")[:48].rstrip("-") or "r"
        if base == "root" or base in PRIMITIVES:
            base = f"{base}-x"
        # Suffixes continue where the last one of this base stopped: a schema with thousands of
        # rules of one base (an object's "-rest" chain) would otherwise probe quadratically.
        name, i = base, self._next.get(base, 1)
        if i > 1:
            name = f"{base}-{i}"
        while name in self.bodies:
            i += 1
            name = f"{base}-{i}"
        self._next[base] = i
        self.bodies[name] = ""
        return name

    def define(self, name: str, body: str) -> None:
        self.bodies[name] = body
        self._by_body.setdefault(body, name)

    def primitive(self, name: str) -> str:
        if name not in self.bodies:
            self.bodies[name] = PRIMITIVES[name]
            for dep in DEPENDS.get(name, ()):
                self.primitive(dep)
        return name

    def text(self, root: str) -> str:
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.bodies.items()]
        return "\n".join(lines) + "\n"


def literal(text: str) -> str:
    """A GBNF string literal matching exactly `text` (ASCII-only grammar text)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        else:
            out.append(_escape_code(code))
    out.append('"')
    return "".join(out)


def _escape_code(code: int) -> str:
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def char_class(ranges: Iterable[tuple[int, int]]) -> str:
    """A GBNF character class for inclusive code point ranges (every bound escaped)."""
    parts = []
    for lo, hi in ranges:
        parts.append(_escape_code(lo) if lo == hi else f"{_escape_code(lo)}-{_escape_code(hi)}")
    return "[" + "".join(parts) + "]"


def normalize(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def complement(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for lo, hi in normalize(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODEPOINT:
        out.append((start, MAX_CODEPOINT))
    return out


def subtract(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    keep = complement(b)
    out = []
    for lo, hi in normalize(a):
        for klo, khi in keep:
            if klo <= hi and lo <= khi:
                out.append((max(lo, klo), min(hi, khi)))
    return out


_SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}


def json_char_set(ranges: list[tuple[int, int]]) -> str | None:
    """GBNF for one character of `ranges` as it appears inside a JSON string (quote, backslash
    and control characters escaped); None when the set is empty."""
    plain = subtract(ranges, [(0, 0x1F), (0x22, 0x22), (0x5C, 0x5C), SURROGATES])
    alts = [char_class(plain)] if plain else []
    inside = normalize(ranges)

    def has(code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in inside)

    for code, esc in ((0x22, '\\"'), (0x5C, "\\\\")):
        if has(code):
            alts.append(literal(esc))
    if all(has(code) for code in range(0x20)):
        alts.append(f'"\\\\u00" [01] {HEX}')
    else:
        alts += [
            literal(_SHORT_ESCAPES.get(code, f"\\u{code:04x}")) for code in range(0x20) if has(code)
        ]
    if not alts:
        return None
    return alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


def json_text(text: str) -> str:
    """GBNF for `text` as it appears inside a JSON string."""
    out: list[str] = []
    run: list[str] = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or ch in '"\\':
            if run:
                out.append(literal("".join(run)))
                run = []
            out.append(json_char_set([(code, code)]) or "")
        else:
            run.append(ch)
    if run:
        out.append(literal("".join(run)))
    return " ".join(out) if out else '""'


# --- repetition -------------------------------------------------------------------------------

# llama.cpp refuses a repetition count of 2,000 or more, and nested repetitions whose counts
# multiply to that; long runs are spelled as a chain of rules with counts up to CHUNK.
CHUNK = 1000
MAX_RUN = 100_000  # `high - low` beyond this is generated up to this many (still valid)


def repeat(rules: Rules, item: str, low: int, high: int | None, hint: str) -> str:
    """GBNF for `low` to `high` (None = any number) repetitions of the element `item`."""
    parts = [f"{item}{{{CHUNK}}}"] * (low // CHUNK)
    if low % CHUNK:
        parts.append(f"{item}{{{low % CHUNK}}}")
    if high is None:
        parts.append(f"{item}*")
    elif high > low:
        chunks, rest = divmod(min(high - low, MAX_RUN), CHUNK)
        more = f"{item}{{0,{rest}}}" if rest else ""
        for _ in range(chunks):
            body = f"{item}{{0,{CHUNK - 1}}} | {item}{{{CHUNK}}} {more}".rstrip()
            more = rules.add(f"{hint}-run", body)
            rules.exclusive.add(more)  # its two branches part after CHUNK items
        parts.append(more)
    return " ".join(parts) or '""'


# --- alternatives of constant texts -----------------------------------------------------------

Trie = dict[str, "Trie"]
_END = ""  # the key marking that a text ends at a node (characters are never empty)


def trie(rules: Rules, texts: Iterable[str], hint: str) -> str:
    """GBNF for exactly one of `texts`, shared prefixes written once: an enum of M strings as M
    plain alternatives makes llama.cpp keep M parse stacks through their common prefix (each
    accepted character then costs O(M²)); as a trie, at most one stack per distinct next
    character. Each branching point is a rule of its own, so no body nests deeply; built
    without recursion (a text may be long)."""
    root: Trie = {}
    for text in texts:
        node = root
        for ch in text:
            node = node.setdefault(ch, {})
        node[_END] = {}
    order: list[Trie] = []  # parents before children
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(child for ch, child in node.items() if ch != _END)
    expr: dict[int, str] = {}  # what may follow each node, as GBNF ("" = nothing)
    for node in reversed(order):
        alts = []
        for ch, child in node.items():
            if ch == _END:
                continue
            run = ch
            while len(child) == 1 and _END not in child:  # a chain: one literal
                ((nxt, child),) = child.items()
                run += nxt
            alts.append(f"{literal(run)} {expr[id(child)]}".rstrip())
        if not alts:
            expr[id(node)] = ""
        elif len(alts) == 1 and _END not in node:
            expr[id(node)] = alts[0]
        else:
            name = rules.add(f"{hint}-t", " | ".join(alts))
            expr[id(node)] = f"{name}?" if _END in node else name
    return expr[id(root)] or '""'
