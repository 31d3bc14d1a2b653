"""Objects the endpoints need, wired in `create_app` and read from `app.state`."""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from tokendock import observability
from tokendock.config import Settings
from tokendock.errors import InvalidRequest, Unauthorized
from tokendock.inference.registry import ModelRegistry
from tokendock.limits.base import Limiter
from tokendock.observability import Metrics
from tokendock.protocol.bounds import precheck_lists
from tokendock.protocol.errors import from_validation_error
from tokendock.protocol.screen import screen
from tokendock.services.accounts import AccountService
from tokendock.services.counting import Counter
from tokendock.services.files import Files
from tokendock.services.models import ModelDirectory
from tokendock.services.pipeline import Pipeline
from tokendock.services.stored_chat import StoredChats
from tokendock.storage.accounts import KeyRow
from tokendock.storage.admin import AdminStore
from tokendock.storage.history import HistoryStore


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    models: ModelRegistry
    pipeline: Pipeline
    accounts: AccountService
    metrics: Metrics
    limiter: Limiter
    history: HistoryStore
    admin: AdminStore
    directory: ModelDirectory
    stored_chats: StoredChats
    counter: Counter  # input tokens counted without generating (rate-limited, not billed)
    files: Files  # the Files API's files, and what the server writes (batch output)


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in a thread pool, a thread hop per request.
    return services_of(request)


Deps = Annotated[Services, Depends(_services)]


async def current_key(request: Request) -> KeyRow:
    """The request's API key (401 when missing, unknown, revoked or expired) — or, for the
    dashboard's playground, the signed-in account's playground key (see _playground)."""
    services: Services = request.app.state.services
    authorization = request.headers.get("authorization")
    if authorization is None and PLAYGROUND_HEADER in request.headers:
        key = await _playground(request, services)
    else:
        key = await services.accounts.authenticate(authorization)
    record = observability.current()
    if record is not None:
        record.key = f"{key.prefix}…{key.last4}"
    return key


CurrentKey = Annotated[KeyRow, Depends(current_key)]

# The playground sends its session's CSRF token in this header instead of an API key. A page
# of another site can neither read the token nor send a custom header without CORS, which
# TokenDock never grants.
PLAYGROUND_HEADER = "x-tokendock-csrf"


async def _playground(request: Request, services: Services) -> KeyRow:
    session = request.app.state.sessions.of(request)
    given = request.headers.get(PLAYGROUND_HEADER, "")
    if not session.account_id or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise Unauthorized("The playground needs a signed-in dashboard session.")
    # The cookie is only signed; the session must still be live (not logged out or ended).
    if await services.accounts.sessions.account(session) is None:
        raise Unauthorized("This dashboard session has ended. Log in again.")
    key = await services.accounts.playground_key(session.account_id)
    if key.account_disabled:
        raise Unauthorized("This account is disabled.")
    return key


def request_id(request: Request) -> str:
    rid: str = request.scope["state"]["request_id"]
    return rid


M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, schema: type[M]) -> M:
    """Strict JSON → schema; any failure is a 400 naming the field, never a 422."""
    body = await request.body()
    services: Services = request.app.state.services
    if services.settings.log_prompts:  # the operator opted in: the body goes in the log line
        record = observability.current()
        if record is not None:
            record.prompt = body[:8192].decode("utf-8", "replace")
    return parse_bytes(body, schema)


def parse_bytes(body: bytes, schema: type[M]) -> M:
    """`parse_body` of a body already read (a batch line's)."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    # One parser policy for every route (NaN, depth, NUL, surrogates: protocol/screen.py).
    value = screen(body)
    lists: dict[str, int] | None = getattr(schema, "list_bounds", None)
    if lists:
        precheck_lists(value, lists)
    try:
        parsed = schema.model_validate_json(body, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise InvalidRequest(
                "We could not parse the JSON body of your request. The body must be valid JSON "
                f"({first['msg']})."
            ) from None
        if first["type"] in ("model_type", "model_attributes_type") and not first["loc"]:
            raise InvalidRequest("The request body must be a JSON object.") from None
        raise from_validation_error(exc) from None
    if LONG_DIGITS.search(body) is not None:
        _check_integers(body)
    return parsed


# Integers beyond 64 bits (19+ digits): the typed fields refuse them with a 400 naming the field;
# anywhere else (a tool's JSON schema, metadata) they are refused here, as an upstream-bound
# body is (strict JSON, inference/upstream/reply.py), so every JSON written later can hold them.
LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _check_integers(body: bytes) -> None:
    json.loads(body, parse_int=_int64)


def _int64(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise InvalidRequest(
            f"A number in the request body is out of range ({text[:24]}…): integers must fit "
            "in 64 bits."
        )
    return value
