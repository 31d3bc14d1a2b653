"""One exception tree for everything a client can be told.

Each class knows its HTTP status, OpenAI error `type` and `code`; `param` names the offending
request field. The web layer turns any of them into the OpenAI error envelope.

    TokenDockError
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── ContextLengthExceeded      400 code=context_length_exceeded
    │   └── UnsupportedParameter       400 code=unsupported_parameter
    ├── NotFound                       404 invalid_request_error
    │   ├── ModelNotFound              404 code=model_not_found
    │   └── UnknownURL                 404 code=unknown_url
    ├── MethodNotAllowed               405 invalid_request_error code=method_not_allowed
    ├── RequestTooLarge                413 invalid_request_error code=request_too_large
    ├── ServiceUnavailable             503 server_error
    │   └── ModelNotReady              503 code=model_not_ready
    └── InternalError                  500 server_error
        └── GenerationFailed           500 code=generation_failed
"""

from __future__ import annotations


class TokenDockError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(TokenDockError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


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


class ServiceUnavailable(TokenDockError):
    status = 503
    type = "server_error"


class ModelNotReady(ServiceUnavailable):
    code = "model_not_ready"


class InternalError(TokenDockError):
    status = 500
    type = "server_error"


class GenerationFailed(InternalError):
    code = "generation_failed"
