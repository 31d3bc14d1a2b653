"""Which GBNF rules can finish: a rule is productive when one of its alternatives needs only
terminals and productive rules. A schema whose rule is not (say an object that must contain
itself) has no finite valid document; the model would write until it runs out of tokens."""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r'\s*(?:(?P<lit>"(?:\\.|[^"\\])*")|(?P<cls>\[(?:\\.|[^\]\\])*\])|(?P<name>[a-zA-Z0-9-]+)'
    r"|(?P<quant>[?*+]|\{\d+(?:,\d*)?\})|(?P<punct>[()|]))"
)


def _tokens(body: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    body = body.rstrip()
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot read GBNF at {body[pos:]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def productive_rules(bodies: dict[str, str]) -> set[str]:
    parsed = {name: _tokens(body) for name, body in bodies.items()}
    done: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, tokens in parsed.items():
            if name not in done and _alternatives(tokens, 0, done)[0]:
                done.add(name)
                changed = True
    return done


def _alternatives(tokens: list[tuple[str, str]], pos: int, done: set[str]) -> tuple[bool, int]:
    """Whether the alternation starting at `pos` can finish; and where it ends (at ')' or the
    end)."""
    any_alt, this_alt = False, True
    while pos < len(tokens) and tokens[pos] != ("punct", ")"):
        kind, text = tokens[pos]
        if (kind, text) == ("punct", "|"):
            any_alt, this_alt, pos = any_alt or this_alt, True, pos + 1
            continue
        if (kind, text) == ("punct", "("):
            ok, pos = _alternatives(tokens, pos + 1, done)
            pos += 1  # the ')'
        else:
            ok = kind != "name" or text in done
            pos += 1
        if pos < len(tokens) and tokens[pos][0] == "quant":
            quant = tokens[pos][1]
            ok = ok or quant in ("?", "*") or quant.startswith(("{0,", "{0}"))
            pos += 1
        this_alt = this_alt and ok
    return any_alt or this_alt, pos
