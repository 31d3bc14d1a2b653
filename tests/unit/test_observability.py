"""Log lines: client-supplied text cannot forge a line, recolour a terminal or add a field."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import orjson
import pytest

from tokendock.observability import (
    JsonFormatter,
    RequestRecord,
    TextFormatter,
    escape_text,
    log_request,
    quote_path,
)

FORGED = "\n2026-01-01 00:00:00,000 INFO tokendock.access: GET /v1/admin 200 request_id=req_x"


class Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.out: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(self.format(record))


@pytest.fixture
def text_lines() -> Iterator[list[str]]:
    handler = Lines(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    access = logging.getLogger("tokendock.access")
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    yield handler.out
    access.removeHandler(handler)
    access.setLevel(old_level)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("nul\x00 del\x7f", "nul\\x00 del\\x7f"),
        ("nel\x85 csi\x9b", "nel\\x85 csi\\x9b"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("tab\t", "tab\\t"),
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
        ("plain é ü 漢 ✓", "plain é ü 漢 ✓"),
    ],
)
def test_escape_text(raw: str, escaped: str) -> None:
    assert escape_text(raw) == escaped


def test_quote_path_percent_encodes_controls_and_spaces() -> None:
    assert quote_path("/v1/x\nfake line\r\x1b") == "/v1/x%0Afake%20line%0D%1B"
    assert quote_path("/v1/chat/completions") == "/v1/chat/completions"
    assert quote_path("/v1/\u2028") == "/v1/%E2%80%A8"


def test_a_forged_path_stays_on_one_access_line(text_lines: list[str]) -> None:
    record = RequestRecord("req_1", "GET", "/v1/x" + FORGED)
    record.status = 404
    log_request(record)
    assert len(text_lines) == 1
    line = text_lines[0]
    assert "\n" not in line and "\r" not in line
    assert "GET /v1/x%0A2026-01-01%2000:00:00,000%20INFO" in line


def test_field_values_are_escaped_and_quoted(text_lines: list[str]) -> None:
    record = RequestRecord("req_2", "POST", "/v1/chat/completions")
    record.status = 404
    record.model = "gemma status=200" + FORGED + "\x1b[2J"
    record.prompt = 'say "hi"'
    log_request(record)
    (line,) = text_lines
    assert "\n" not in line and "\x1b" not in line
    # The model is one quoted value: it cannot add a `status=200` field of its own.
    assert ' model="gemma status=200\\n2026-01-01' in line
    assert '\\x1b[2J"' in line
    assert ' prompt="say \\"hi\\""' in line
    assert " request_id=req_2 " in line


def test_a_traceback_is_indented_under_its_line() -> None:
    formatter = TextFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("bad input" + FORGED)
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "tokendock.web.middleware", logging.ERROR, __file__, 1, "failed for %s", ("/x\n/y",), None
    )
    record.exc_info = exc_info
    lines = formatter.format(record).split("\n")
    assert lines[0] == "ERROR tokendock.web.middleware: failed for /x\\n/y"
    # Every further line is indented: none can pass for a log line of its own.
    assert len(lines) > 2
    assert all(line.startswith("    ") for line in lines[1:])
    assert "    ValueError: bad input" in lines
    assert "    2026-01-01 00:00:00,000 INFO tokendock.access: GET /v1/admin 200" in lines[-1]


def test_json_lines_stay_one_line(text_lines: list[str]) -> None:
    formatter = JsonFormatter()
    record = RequestRecord("req_3", "GET", "/v1/x" + FORGED)
    record.status = 404
    log = logging.LogRecord("tokendock.access", logging.INFO, __file__, 1, "%s", ("m",), None)
    log.request = record.fields()
    out = formatter.format(log)
    assert "\n" not in out
    assert orjson.loads(out)["path"] == "/v1/x" + FORGED
