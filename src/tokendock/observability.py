"""What an operator sees: one structured log line per request, and Prometheus metrics.

A `RequestRecord` is opened by the web middleware for each request and reachable from anywhere
in that request's task through `current()` (a context variable, copied into the tasks a request
starts). The layers that know a fact write it in: the key (authentication), the model and
deployment, tokens and cost (settlement), the error code (the error handler). When the response
has ended — streams included — the middleware emits the line and the metrics.

The line never carries an API key (only its prefix and last four), a password, or a prompt —
unless the operator sets `log_prompts`.

Metrics are multi-process safe: with `--workers N` the CLI points PROMETHEUS_MULTIPROC_DIR at a
fresh directory before the workers start, and `/metrics` aggregates every worker's files.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

ACCESS = logging.getLogger("tokendock.access")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    key: str | None = None  # "td-abcd…wxyz"
    model: str | None = None
    deployment: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = False
    cost_micro: int | None = None  # micro-credits charged
    ttft_ms: int | None = None
    outcome: str | None = None  # ok, error, client_disconnected
    error: str | None = None  # the error code sent
    prompt: str | None = None  # only with log_prompts

    def fields(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "started"}
        out["latency_ms"] = int((time.monotonic() - self.started) * 1000)
        if not self.estimated:
            out.pop("estimated")
        return out


_current: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "tokendock_request", default=None
)


def current() -> RequestRecord | None:
    return _current.get()


def begin(record: RequestRecord) -> contextvars.Token[RequestRecord | None]:
    return _current.set(record)


def end(token: contextvars.Token[RequestRecord | None]) -> None:
    _current.reset(token)


@dataclass(slots=True, frozen=True)
class _PerModel:
    """One model's labelled metric children."""

    latency: Histogram
    ttft: Histogram
    prompt: Counter
    completion: Counter
    credits: Counter


class Metrics:
    """The process's Prometheus metrics (registered in their own registry)."""

    def __init__(self) -> None:
        self.active = 0  # requests being served by this process (a plain int: read per request)
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tokendock_requests",
            "HTTP requests by model and status.",
            ["model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tokendock_request_seconds",
            "Request latency (to the last byte of a stream).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "tokendock_time_to_first_token_seconds",
            "Time to the first generated token.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "tokendock_tokens", "Tokens billed, by model and kind.", ["model", "kind"], registry=r
        )
        self.credits = Counter(
            "tokendock_credits_captured_micro",
            "Micro-credits captured from balances.",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "tokendock_requests_in_flight",
            "Requests being served.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.deployment_up = Gauge(
            "tokendock_deployment_healthy",
            "1 while an upstream deployment takes traffic, 0 while it cools down.",
            ["model", "deployment"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.cooldowns = Counter(
            "tokendock_deployment_cooldowns",
            "Times an upstream deployment was put to cool down.",
            ["model", "deployment"],
            registry=r,
        )
        self.tokenizer_calls = Counter(
            "tokendock_tokenizer_calls",
            "Prompts the embedded engine tokenized (work done before generation).",
            ["model"],
            registry=r,
        )
        self.spills = Counter(
            "tokendock_spilled_requests",
            "Requests for an embedded model sent to its upstream deployments (spill-over).",
            ["model"],
            registry=r,
        )
        self._counted: dict[tuple[str, int], Counter] = {}
        self._per_model: dict[str, _PerModel] = {}
        # One process: the gauge reads `active` when scraped (no lock taken per request).
        # Several (--workers): each process's gauge is a shared file value, kept per request.
        self._shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if not self._shared:
            self.in_flight.set_function(lambda: self.active)

    def entered(self) -> None:
        """A request began (not a probe or a scrape)."""
        self.active += 1
        if self._shared:
            self.in_flight.inc()

    def left(self) -> None:
        self.active -= 1
        if self._shared:
            self.in_flight.dec()

    def observe(self, record: RequestRecord) -> None:
        """Once per request: the labelled children are looked up once per model and status,
        not per request (`labels()` locks and hashes; it was half of this call's time)."""
        model = record.model or "-"
        counted = self._counted.get((model, record.status))
        if counted is None:
            counted = self._counted[model, record.status] = self.requests.labels(
                model, str(record.status)
            )
        counted.inc()
        if record.model is None:
            return
        per_model = self._per_model.get(model)
        if per_model is None:
            per_model = self._per_model[model] = _PerModel(
                self.latency.labels(model),
                self.ttft.labels(model),
                self.tokens.labels(model, "prompt"),
                self.tokens.labels(model, "completion"),
                self.credits.labels(model),
            )
        per_model.latency.observe(time.monotonic() - record.started)
        if record.ttft_ms is not None:
            per_model.ttft.observe(record.ttft_ms / 1000)
        if record.prompt_tokens:
            per_model.prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            per_model.completion.inc(record.completion_tokens)
        if record.cost_micro:
            per_model.credits.inc(record.cost_micro)

    def tokenized(self, model: str) -> None:
        self.tokenizer_calls.labels(model).inc()

    def spilled(self, model: str) -> None:
        self.spills.labels(model).inc()

    def watch_engines(self, engines: Iterable[Engine]) -> None:
        """The embedded engines' state, read when scraped (EngineCollector)."""
        self.registry.register(EngineCollector(list(engines)))

    def deployment_health(self, model: str, deployment: str, healthy: bool) -> None:
        self.deployment_up.labels(model, deployment).set(1 if healthy else 0)
        if not healthy:
            self.cooldowns.labels(model, deployment).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text: this process's, or every worker's in multi-process mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def log_request(record: RequestRecord) -> None:
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    fields = record.fields()
    path = quote_path(record.path)
    ACCESS.info("%s %s %s", record.method, path, record.status, extra={"request": fields})


# Client-supplied text (a path, a model name, a prompt) must not forge a log line: C0 and C1
# control characters, DEL and the Unicode line separators are written as escapes. ESC (0x1b)
# is one of them, so ANSI sequences cannot recolour or rewrite a terminal either; nor can
# bidirectional overrides reorder what a reader sees.
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROL = [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *_BIDI]
_ESCAPES = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _CONTROL}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_PATH_ESCAPES = {c: "".join(f"%{b:02X}" for b in chr(c).encode()) for c in [*_CONTROL, 0x20]}


def escape_text(text: str) -> str:
    """One line, whatever the text: control characters become backslash escapes."""
    return text.translate(_ESCAPES)


def quote_path(path: str) -> str:
    """A decoded URL path as it went over the wire: controls and spaces percent-encoded."""
    return path.translate(_PATH_ESCAPES)


def _field_value(value: object) -> str:
    """A key=value value that reads back unambiguously: backslashes doubled, controls escaped,
    and quoted when it has a space, a quote or an `=`."""
    text = escape_text(str(value).replace("\\", "\\\\"))
    if text == "" or any(c in text for c in ' "='):
        return '"' + text.replace('"', '\\"') + '"'
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an access line carries the request's fields at top level."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            out.update(request)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    """Human-readable lines; an access line appends its fields as key=value (quoted when a
    value has a space, a quote or an `=`). A record is exactly one line that starts with its
    timestamp: message and fields are escaped, and a traceback's lines are indented under it."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_text(record.message)
        line = super().formatMessage(record)
        request = getattr(record, "request", None)
        if isinstance(request, dict):
            skip = {"method", "path", "status"}
            pairs = (f"{k}={_field_value(v)}" for k, v in request.items() if k not in skip)
            line += " " + " ".join(pairs)
        return line

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escape_text(line) for line in text.splitlines())


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Engine(Protocol):
    """An embedded engine as the metrics see it (inference/engine/base.py Engine: this layer may not
    import it): `load()` gives an EngineLoad."""

    model_id: str

    @property
    def ready(self) -> bool: ...

    def load(self) -> Any: ...


class EngineCollector:
    """Each embedded engine's slots, queue, KV use and speed, read at scrape time (no work per
    request or per token)."""

    def __init__(self, engines: list[Engine]):
        self._engines = engines

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families depend on the engines

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "slots": ("Sequence slots of the embedded engine.", lambda x: x.slots),
            "running": ("Choices being generated (holding a slot).", lambda x: x.running),
            "waiting": ("Choices waiting for a slot.", lambda x: x.waiting),
            "kv_tokens": (
                "Tokens held in KV cells (prefix cache included).",
                lambda x: x.kv_tokens,
            ),
            "kv_capacity_tokens": ("Tokens the KV cache can hold.", lambda x: x.kv_capacity),
            "tokens_per_second": (
                "Recent aggregate generation speed.",
                lambda x: x.tokens_per_second,
            ),
        }
        counters = {
            "generated_tokens": ("Tokens sampled.", lambda x: x.generated),
            "prompt_evaluated_tokens": ("Prompt tokens decoded.", lambda x: x.prompt_evaluated),
            "prompt_cached_tokens": (
                "Prompt tokens reused from the prefix cache.",
                lambda x: x.prompt_cached,
            ),
        }
        loads = [(e.model_id, e.load()) for e in self._engines if e.ready]
        families: list[tuple[Any, str, tuple[str, Callable[[Any], float]]]] = [
            *((GaugeMetricFamily, name, spec) for name, spec in gauges.items()),
            *((CounterMetricFamily, name, spec) for name, spec in counters.items()),
        ]
        for kind, name, (text, read) in families:
            family = kind(f"tokendock_engine_{name}", text, labels=["model"])
            for model, load in loads:
                family.add_metric([model], read(load))
            yield family
