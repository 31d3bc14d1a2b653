"""Helpers for the dashboard tests: a form-posting HTTP client that keeps the session cookie."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Visitor:
    """One browser-like visitor: a cookie jar, and the CSRF token of the last page it got."""

    def __init__(self, base_url: str, address: str | None = None):
        """`address`: a loopback address to connect from (e.g. 127.0.0.2), so the server sees
        the visitor at that client address."""
        transport = httpx.HTTPTransport(local_address=address) if address else None
        self.http = httpx.Client(
            base_url=base_url, follow_redirects=False, timeout=30, transport=transport
        )
        self.csrf = ""

    def copy(self, address: str | None = None) -> Visitor:
        """Another client holding this one's cookie and CSRF token (a stolen session)."""
        other = Visitor(str(self.http.base_url), address)
        other.http.cookies.update(self.http.cookies)
        other.csrf = self.csrf
        return other

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        match = CSRF.search(response.text)
        if match:
            self.csrf = match.group(1)
        return response

    def post(self, path: str, data: dict[str, str], *, csrf: bool = True) -> httpx.Response:
        fields = {**data, **({"csrf": self.csrf} if csrf else {})}
        response = self.http.post(path, data=fields)
        match = CSRF.search(response.text)
        if match:
            self.csrf = match.group(1)
        return response

    def signup(self, email: str, password: str = "correct horse battery") -> httpx.Response:
        self.get("/signup")
        data = {"email": email, "password": password, "password2": password}
        return self._signed_in(self.post("/signup", data))

    def login(self, email: str, password: str = "correct horse battery") -> httpx.Response:
        self.get("/login")
        return self._signed_in(self.post("/login", {"email": email, "password": password}))

    def _signed_in(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 303:  # in: a new session, so fetch a page for its token
            self.get("/dashboard")
        return response

    def new_key(self, name: str = "k") -> str:
        self.get("/dashboard/keys")
        page = self.post("/dashboard/keys", {"name": name}).text
        match = re.search(r'data-testid="new-secret">(td-[A-Za-z0-9]+)<', page)
        assert match, page[:2000]
        return match.group(1)
