"""One exception tree for everything a client can be told.

Each class knows its HTTP status, OpenAI error `type` and `code`; `param` names the offending
request field. The web layer turns any of them into the OpenAI error envelope.

    TokenDockError
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── ContextLengthExceeded      400 code=context_length_exceeded
    │   └── UnsupportedParameter       400 code=unsupported_parameter
    ├── Unauthorized                   401 invalid_request_error
    │   └── InvalidAPIKey              401 code=invalid_api_key
    ├── PaymentRequired                402 insufficient_quota
    │   ├── InsufficientCredit         402 code=insufficient_credit_balance
    │   └── SpendLimitReached          402 code=key_spend_limit_reached
    ├── PermissionDenied               403 permission_error
    │   └── ModelNotAllowed            403 code=model_not_allowed
    ├── NotFound                       404 invalid_request_error
    │   ├── ModelNotFound              404 code=model_not_found
    │   └── UnknownURL                 404 code=unknown_url
    ├── MethodNotAllowed               405 invalid_request_error code=method_not_allowed
    ├── Conflict                       409 invalid_request_error
    ├── RequestTooLarge                413 invalid_request_error code=request_too_large
    ├── ClientLeft                     499 (never read) code=client_disconnected
    ├── RateLimited                    429 requests|tokens code=rate_limit_exceeded
    ├── ServiceUnavailable             503 server_error
    │   ├── ModelNotReady              503 code=model_not_ready
    │   ├── ModelUnpriced              503 code=model_unpriced
    │   └── NoHealthyDeployment        503 code=no_healthy_deployment
    ├── UpstreamError                  502 server_error code=upstream_error
    │   └── UpstreamAuthFailed         502 code=upstream_auth_failed
    ├── UpstreamTimeout                504 server_error code=upstream_timeout
    └── InternalError                  500 server_error
        └── GenerationFailed           500 code=generation_failed
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateWindow:
    """One rate limit's state, as the x-ratelimit-*-{requests,tokens} headers report it."""

    limit: int
    remaining: int
    reset: float  # seconds until the subject is back to its full allowance


class TokenDockError(Exception):
    """Besides status / type / code / param, an error may carry what the client should know to
    retry: `retry_after` (seconds; inf = never) and the rate limits' `windows` (requests,
    tokens). The web layer writes them as headers (web/errors.py)."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after: float | None = None
        self.windows: tuple[RateWindow | None, RateWindow | None] | None = None
        if code is not None:
            self.code = code


class InvalidRequest(TokenDockError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class Unauthorized(TokenDockError):
    status = 401
    type = "invalid_request_error"


class InvalidAPIKey(Unauthorized):
    code = "invalid_api_key"


def _credits(micro: int) -> str:
    whole, frac = divmod(micro, 1_000_000)
    return f"{whole}.{frac:06d}"


class PaymentRequired(TokenDockError):
    status = 402
    type = "insufficient_quota"


class InsufficientCredit(PaymentRequired):
    code = "insufficient_credit_balance"

    def __init__(self, needed: int, balance: int):
        super().__init__(
            f"Insufficient credit balance: this request may cost up to {_credits(needed)} "
            f"credits (its prompt plus max_tokens), but the balance is {_credits(balance)}. "
            "Lower max_tokens (or n), or add credits."
        )
        self.needed = needed
        self.balance = balance


class SpendLimitReached(PaymentRequired):
    code = "key_spend_limit_reached"

    def __init__(self, needed: int):
        super().__init__(
            f"This API key's spend limit does not cover this request (up to {_credits(needed)} "
            "credits). Lower max_tokens, or raise the key's limit."
        )


class PermissionDenied(TokenDockError):
    status = 403
    type = "permission_error"


class ModelNotAllowed(PermissionDenied):
    code = "model_not_allowed"


class Conflict(TokenDockError):
    status = 409
    type = "invalid_request_error"


class NotFound(TokenDockError):
    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )


class UnknownURL(NotFound):
    code = "unknown_url"


class MethodNotAllowed(TokenDockError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLarge(TokenDockError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ClientLeft(TokenDockError):
    """The client went away while its body was still being read (a pass-through upload): no
    one reads this answer; the request is released like any refusal before work was done."""

    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"


class RateLimited(TokenDockError):
    """429; the client is told when to retry (`retry_after`, seconds; inf: never). `precise`:
    the wait is a rate limiter's, exact to the millisecond — sent as `retry-after-ms` too, with
    `retry-after` in whole seconds up to 60 (what the SDKs honour)."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        retry_after: float,
        precise: bool = False,
        windows: tuple[RateWindow | None, RateWindow | None] | None = None,
    ):
        super().__init__(message)
        self.type = kind
        self.retry_after = retry_after
        self.precise = precise
        self.windows = windows


class ServiceUnavailable(TokenDockError):
    status = 503
    type = "server_error"


class ModelNotReady(ServiceUnavailable):
    code = "model_not_ready"


class ModelUnpriced(ServiceUnavailable):
    code = "model_unpriced"


class NoHealthyDeployment(ServiceUnavailable):
    code = "no_healthy_deployment"


class UpstreamError(TokenDockError):
    """An upstream server failed in a way retries could not hide. Never carries its key."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamAuthFailed(UpstreamError):
    code = "upstream_auth_failed"


class UpstreamTimeout(TokenDockError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"


class InternalError(TokenDockError):
    status = 500
    type = "server_error"


class GenerationFailed(InternalError):
    code = "generation_failed"
