"""The bounds on schema → grammar work, checked before admission (a cheap request never buys
expensive work). Over any of them: a 400 `invalid_request_error` whose `param` is the path down
to the schema keyword, so the client can see which part is too big.

Two costs are bounded. The conversion itself (CPU on the server, before any credit is held):
at most `MAX_NODES` schema nodes and `MAX_DEPTH` levels of JSON nesting, `MAX_VISIT_DEPTH`
schema levels counted through `$ref`s, a wall-clock `DEADLINE_SECONDS` checked as it goes, and
`MAX_GRAMMAR` characters of grammar. And the grammar's cost on the engine thread at every
sampled token, which llama.cpp cannot interrupt: its parse stacks (grammar_stacks.py) at most
`MAX_STACKS` — `MAX_STACKS_LOGPROBS` when logprobs are asked, because then the grammar masks the
whole vocabulary at every step — and enums of at most `MAX_ENUM_VALUES` values,
`MAX_CONSTANT_CHARS` characters of enum / const text in all. The numbers were measured on the
default model (README: "Refused schemas"; bench/schemas.py `worst_accepted`).
"""

from __future__ import annotations

import time

from tokendock.errors import InvalidRequest
from tokendock.inference.grammar.stacks import UNBOUNDED, Estimator

MAX_NODES = 10_000
MAX_DEPTH = 64  # JSON nesting of the schema document
MAX_VISIT_DEPTH = 64  # schema levels, counted through $ref (a chain of 400 refs: refused)
MAX_GRAMMAR = 200_000  # characters of grammar text (llama.cpp parses it for every choice)
MAX_ENUM_VALUES = 1000
MAX_CONSTANT_CHARS = 30_000
MAX_STACKS = 128
MAX_STACKS_LOGPROBS = 32  # json_object mode (any JSON object) keeps 26
DEADLINE_SECONDS = 1.0
CHECK_EVERY = 64  # units of work between clock reads


class Budget:
    """A conversion's wall-clock deadline, checked cooperatively (`tick` as work is done)."""

    def __init__(self, seconds: float = DEADLINE_SECONDS, *, param: str = "") -> None:
        self.deadline = time.monotonic() + seconds
        self.param = param
        self._count = 0

    def tick(self) -> None:
        self._count += 1
        if self._count % CHECK_EVERY == 0 and time.monotonic() > self.deadline:
            raise InvalidRequest(
                f"Invalid '{self.param}': the schema is too complex to turn into a grammar in "
                "time; simplify it (fewer alternatives, references or nested levels).",
                param=self.param,
                code="schema_too_complex",
            )


def check_stacks(
    bodies: dict[str, str],
    root: str,
    *,
    careful: set[str],
    exclusive: set[str],
    origins: dict[str, str],
    param: str,
    limit: int,
    budget: Budget,
) -> None:
    """Refuse a grammar that may keep more than `limit` parse stacks alive, naming the deepest
    schema location that is over the bound on its own (or `param` when only the whole is)."""
    estimator = Estimator({**bodies, "root": root}, careful, budget.tick, exclusive)
    estimator.run()
    widest = estimator.width("root")
    if widest <= limit:
        return
    over = [(where, estimator.width(rule)) for rule, where in origins.items()]
    over = [(where, width) for where, width in over if width > limit]
    where, width = max(over, key=lambda o: (o[0].count("."), o[1]), default=(param, widest))
    amount = "without bound" if width >= UNBOUNDED else f"up to {width}"
    raise InvalidRequest(
        f"Invalid '{where}': the schema has too many alternatives that can be followed at once "
        f"(the grammar would track {amount} parse paths, at most {limit} are allowed"
        f"{' with logprobs' if limit == MAX_STACKS_LOGPROBS else ''}); make the alternatives "
        "start differently (a leading const / enum discriminator) or use fewer of them.",
        param=where,
        code="schema_too_complex",
    )
