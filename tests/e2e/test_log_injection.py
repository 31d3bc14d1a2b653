"""A client cannot forge a line of the server's (text) log: a `%0A` in the path, raw control
bytes, ANSI escapes — each request still makes exactly one line."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.e2e.server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.any_database]

FORGED = "2026-01-01 00:00:00,000 INFO tokendock.access: GET /v1/admin 200"


def lines_naming(server: Server, request_id: str) -> list[str]:
    deadline = time.monotonic() + 5
    while True:  # the access line is written once the response has ended
        lines = [line for line in server.log().splitlines() if request_id in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_a_newline_in_the_path_makes_one_log_line(server: Server) -> None:
    path = "/v1/x%0A" + FORGED.replace(" ", "%20") + "%0D%1B[2J%E2%80%A8"
    response = httpx.get(server.base_url + path)
    assert response.status_code == 404
    request_id = response.headers["x-request-id"]
    lines = lines_naming(server, request_id)
    assert len(lines) == 1, lines
    assert lines[0].count(" tokendock.access: ") == 1
    assert "GET /v1/x%0A2026-01-01%2000:00:00,000%20INFO" in lines[0]
    assert "\x1b" not in server.log()
    assert not any(line.startswith(FORGED) for line in server.log().splitlines())


def test_raw_control_bytes_in_the_request_line_forge_nothing(server: Server) -> None:
    """Bytes an HTTP client library would refuse to send, straight down a socket."""
    request = (
        b"GET /v1/raw\x1b[31m\x7f\x85/\r\n" + FORGED.encode() + b" HTTP/1.1\r\n"
        b"Host: x\r\nUser-Agent: a\x1b[2Jb\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    httpx.get(server.base_url + "/health")  # the log has caught up when this one is served
    log = server.log()
    assert "\x1b" not in log
    assert not any(line.startswith(FORGED) for line in log.splitlines())
