"""One upstream OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, Ollama, a hosted API).

`Deployment.open()` sends one request and returns once the upstream has committed to an answer:
for a non-streaming request the whole JSON body, for a stream the first event (so a hang or a
failure before the first token is still retryable on another deployment). Everything that can go
wrong is one `UpstreamFailure` that says whether another deployment may be tried; errors that
are the client's fault are `ClientFault` and are passed back, never retried.

The upstream's API key is read from the environment once and only ever sent in its
Authorization header: no message, log line or exception carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from tokendock.catalog import DeploymentSpec

JSON = dict[str, Any]


class UpstreamFailure(Exception):
    """The deployment could not answer. `retryable`: another deployment may be tried.
    `timeout` tells a slow upstream from a broken one, `auth` a rejected key, `unreachable` a
    connection that could not even be opened."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        timeout: bool = False,
        auth: bool = False,
        unreachable: bool = False,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.timeout = timeout
        self.auth = auth
        self.unreachable = unreachable
        self.retry_after = retry_after


class ClientFault(Exception):
    """The upstream refused the request itself (400, 413, 422): the client's error to see."""

    def __init__(self, status: int, error: JSON):
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error


@dataclass(slots=True)
class Health:
    """Passive and active health of one deployment, kept by the router."""

    outstanding: int = 0
    batch: int = 0  # of those, batch lines (held to the deployment's `batch_share`)
    failures: int = 0  # consecutive
    cooldown_until: float = 0.0
    last_error: str | None = None

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until


@dataclass(slots=True)
class Deployment:
    spec: DeploymentSpec
    api_key: str | None = None
    health: Health = field(default_factory=Health)

    @classmethod
    def from_spec(cls, spec: DeploymentSpec) -> Deployment:
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        return cls(spec, key or None)

    @property
    def name(self) -> str:
        return self.spec.name

    def headers(self, request_id: str) -> dict[str, str]:
        # Not x-request-id: some servers (llama.cpp's Python server) insist it is a UUID.
        headers = {"content-type": "application/json", "x-tokendock-request-id": request_id}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    async def open(
        self,
        session: aiohttp.ClientSession,
        path: str,
        body: bytes,
        *,
        stream: bool,
        request_id: str,
    ) -> Answer:
        spec = self.spec
        # A whole answer is bounded by the asyncio.timeout below alone; a stream also by
        # aiohttp's total (it outlives this call). One timer less per non-streamed request.
        timeout = aiohttp.ClientTimeout(
            total=spec.total_timeout if stream else None, sock_connect=spec.connect_timeout
        )
        what = "first token" if stream else "answer"
        with self._failures(what) as held:
            async with asyncio.timeout(spec.first_token_timeout if stream else spec.total_timeout):
                resp = held.resp = await session.post(
                    spec.base_url + path,
                    data=body,
                    headers=self.headers(request_id),
                    timeout=timeout,
                )
                if resp.status != 200:
                    raise await self._refusal(resp)
                if not stream:
                    return Answer(self, body=orjson.loads(await resp.read()))
                events = sse_events(resp.content, self.name)
                first = await anext(events, None)
                if first is None:
                    raise UpstreamFailure(f"{self.name}: the stream ended before any event")
                return Answer(self, first=first, rest=events, response=resp)

    async def send(
        self,
        session: aiohttp.ClientSession,
        path: str,
        body: AsyncIterable[bytes],
        content_type: str,
        *,
        request_id: str,
    ) -> Answer:
        """A pass-through body, streamed as it is made; the answer commits once the status is
        200 (its headers read, its bytes left in `response` for the caller). The whole request
        is bounded by the deployment's `total_timeout`; failures are what `open()` raises."""
        spec = self.spec
        timeout = aiohttp.ClientTimeout(total=spec.total_timeout, sock_connect=spec.connect_timeout)
        headers = {**self.headers(request_id), "content-type": content_type}
        with self._failures("answer") as held:
            resp = held.resp = await session.post(
                spec.base_url + path, data=body, headers=headers, timeout=timeout
            )
            if resp.status != 200:
                raise await self._refusal(resp)
            return Answer(self, response=resp)

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[Held]:
        """Everything that goes wrong in a try as one UpstreamFailure (the response, if any,
        closed): a timeout waiting for `what`, a connection or protocol error, bad JSON."""
        held = Held()
        try:
            yield held
        except TimeoutError:
            _close(held.resp)
            raise UpstreamFailure(
                f"{self.name}: no {what} within its timeout", timeout=True
            ) from None
        except (aiohttp.ClientError, orjson.JSONDecodeError, ValueError) as exc:
            _close(held.resp)
            unreachable = isinstance(exc, aiohttp.ClientConnectorError)
            raise UpstreamFailure(
                f"{self.name}: {_describe(exc)}", unreachable=unreachable
            ) from None
        except BaseException:
            _close(held.resp)
            raise

    async def _refusal(self, resp: aiohttp.ClientResponse) -> Exception:
        status = resp.status
        text = (await resp.read())[:4096]
        resp.release()
        error = _error_of(text)
        if status in (400, 413, 422):
            return ClientFault(400 if status == 422 else status, error)
        if status in (401, 403):
            return UpstreamFailure(
                f"{self.name} rejected TokenDock's credentials (HTTP {status}); check the "
                f"deployment's api_key_env",
                auth=True,
            )
        retry_after = _seconds(resp.headers.get("retry-after"))
        detail = error.get("message") or text.decode("utf-8", "replace")[:200]
        return UpstreamFailure(f"{self.name}: HTTP {status}: {detail}", retry_after=retry_after)

    async def probe(self, session: aiohttp.ClientSession) -> None:
        """GET {base_url}/models; raises UpstreamFailure when the deployment does not answer."""
        spec = self.spec
        timeout = aiohttp.ClientTimeout(total=spec.connect_timeout * 2)
        try:
            async with session.get(
                spec.base_url + "/models", headers=self.headers("probe"), timeout=timeout
            ) as resp:
                await resp.read()
                if resp.status in (401, 403):
                    raise UpstreamFailure(f"{self.name}: probe rejected (HTTP {resp.status})")
                if resp.status >= 500:
                    raise UpstreamFailure(f"{self.name}: probe got HTTP {resp.status}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamFailure(f"{self.name}: probe failed: {_describe(exc)}") from None


@dataclass(slots=True)
class Held:
    """The response of a try, once there is one (closed when the try fails)."""

    resp: aiohttp.ClientResponse | None = None


@dataclass(slots=True)
class Answer:
    """A committed upstream answer: `body` (non-streaming), or a stream: its `first` event and
    the `rest` (from `sse_events`: ends at `[DONE]`, raises UpstreamFailure when it breaks)."""

    deployment: Deployment
    body: JSON | None = None
    first: JSON | None = None
    rest: AsyncIterator[JSON] | None = None
    response: aiohttp.ClientResponse | None = None
    background: bool = False  # a batch line's: it holds one of the deployment's batch seats

    def close(self, *, reuse: bool) -> None:
        """Release the connection to the pool (`reuse`) or close it, which stops the upstream's
        generation (client gone, or the stream was cut)."""
        if self.response is not None:
            if reuse:
                self.response.release()
            else:
                self.response.close()


async def sse_events(content: aiohttp.StreamReader, name: str) -> AsyncIterator[JSON]:
    """The JSON events of a server-sent event stream, up to `[DONE]` (comments and fields other
    than `data:` skipped). An error event, a broken connection, a timeout or bad JSON raise
    UpstreamFailure. One generator, parsing as it reads: this runs once per streamed token."""
    lines: list[bytes] = []
    try:
        async for raw in content:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"data:"):
                value = line[5:]
                lines.append(value[1:] if value.startswith(b" ") else value)
                continue
            if line or not lines:
                continue
            data = lines[0] if len(lines) == 1 else b"\n".join(lines)
            lines = []
            if data == b"[DONE]":
                return
            yield _event(data)
        if lines:
            data = b"\n".join(lines)
            if data != b"[DONE]":
                yield _event(data)
    except TimeoutError:
        raise UpstreamFailure(f"{name}: stream exceeded its total timeout", timeout=True) from None
    except (aiohttp.ClientError, orjson.JSONDecodeError, ValueError) as exc:
        raise UpstreamFailure(f"{name}: stream broke: {_describe(exc)}") from None


def _event(data: bytes) -> JSON:
    """One event's JSON object; an error event raises UpstreamFailure."""
    item = orjson.loads(data)
    if not isinstance(item, dict):
        raise ValueError("an event that is not a JSON object")
    if "error" in item and "choices" not in item:
        error = item["error"] if isinstance(item["error"], dict) else {"message": item["error"]}
        raise UpstreamFailure(f"error event: {error.get('message', 'unknown error')}")
    return item


def _error_of(text: bytes) -> JSON:
    with contextlib.suppress(orjson.JSONDecodeError):
        body = orjson.loads(text)
        if isinstance(body, dict):
            error = body.get("error", body)
            if isinstance(error, dict):
                return error
            if isinstance(error, str):
                return {"message": error}
    return {"message": text.decode("utf-8", "replace")[:500]}


def _seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: treat as unknown


def _describe(exc: BaseException) -> str:
    kind = type(exc).__name__
    text = str(exc)
    return f"{kind}: {text}" if text else kind


def _close(resp: aiohttp.ClientResponse | None) -> None:
    if resp is not None:
        resp.close()
