"""Process settings: from `TOKENDOCK_*` environment variables, then CLI flags.

Nothing is built at import time; `Settings()` reads the environment when called. Every field
carries its description, which the README's configuration table mirrors.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CATALOG = Path(__file__).with_name("default_models.toml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOKENDOCK_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the HTTP server.")
    data_dir: Path = Field(
        Path("data"), description="Directory for assembled model files and (later) the database."
    )
    models_file: Path = Field(
        DEFAULT_CATALOG,
        description="Model catalog (TOML) mapping public model ids to engine settings.",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest accepted request body, in bytes."
    )
    keepalive_seconds: float = Field(
        10.0,
        gt=0,
        description="A stream with no event for this long gets an SSE comment `: ping`.",
    )
    log_level: str = Field("info", description="Logging level: debug, info, warning, error.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: for people; json: one JSON object per line (for collectors)."
    )
    log_prompts: bool = Field(
        False, description="Put each request's prompt in its log line (off: never logged)."
    )
    metrics_token: str | None = Field(
        None, description="When set, GET /metrics needs `Authorization: Bearer <token>`."
    )
    base_url: str | None = Field(
        None, description="Public base URL shown in logs (defaults to http://HOST:PORT)."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL, e.g. postgresql+asyncpg://user:pw@host/db "
        "(default: SQLite file DATA_DIR/tokendock.db).",
    )
    auto_migrate: bool = Field(True, description="Apply database migrations when serve starts.")
    instance_id: str | None = Field(
        None,
        description="Names this process's credit holds, released at its next start after a "
        "crash; unique per replica (default: HOSTNAME:PORT; with --workers, + :PID).",
    )
    hold_ttl_seconds: float = Field(
        30,
        gt=0,
        description="A running request's credit hold is renewed every third of this; holds "
        "not renewed for this long (their process is gone) are released by a sweep.",
    )
    sweep_seconds: float = Field(
        10, gt=0, description="How often holds past their TTL are swept (released)."
    )
    key_cache_seconds: float = Field(
        1.0, ge=0, description="API key lookups are cached this long (revocation delay)."
    )
    bootstrap_email: str = Field(
        "admin@localhost", description="Admin account created on first start (empty database)."
    )
    bootstrap_password: str | None = Field(
        None, description="Its password (default: random, printed once)."
    )
    bootstrap_grant: str = Field("10", description="Credits granted to that first account.")
    rate_limit_backend: Literal["memory", "redis"] = Field(
        "memory", description="memory: exact for one process; redis: exact across processes."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for rate limits.")
    redis_prefix: str = Field("td:rl:", description="Key prefix for rate-limit state in Redis.")
    rate_limit_fail_open: bool = Field(
        False, description="When Redis is unreachable: admit and log (true) or 503 (false)."
    )
    rate_tiers: dict[str, dict[str, int]] = Field(
        default_factory=lambda: {"default": {"rpm": 60, "tpm": 100_000, "concurrent": 4}},
        description='Default limits per account tier, JSON (default: {"default": {"rpm": 60, '
        '"tpm": 100000, "concurrent": 4}}); 0 = unlimited. Apply to each key and each account.',
    )
    workers: int = Field(1, ge=1, description="Server processes (more than 1 needs Redis).")
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, requests in flight get this long to finish; then streams end "
        "with an error event, other requests with a 503 (billed for what was generated).",
    )
    session_secret: str | None = Field(
        None,
        description="Signs dashboard session cookies; give every replica the same one "
        "(default: random, kept in DATA_DIR/session.key).",
    )
    session_days: float = Field(7.0, gt=0, description="Dashboard sessions last this long.")
    secure_cookies: bool | None = Field(
        None, description="Mark cookies Secure (default: when BASE_URL starts with https://)."
    )
    signup_open: bool = Field(True, description="Anyone may create an account on the dashboard.")
    signup_grant: str = Field("0", description="Credits a new dashboard account starts with.")
    login_attempts_per_minute: int = Field(
        5, ge=1, description="Log-in attempts per minute per client address and email."
    )
    login_attempts_per_minute_per_address: int = Field(
        20, ge=1, description="Log-in attempts per minute per client address (any email)."
    )
    login_failures_per_hour_per_email: int = Field(
        100,
        ge=0,
        description="Failed log-ins per hour per email over all addresses, each address "
        "counting at most a tenth (0 = no cap).",
    )
    signups_per_hour_per_address: int = Field(
        10, ge=0, description="Dashboard sign-ups per hour per client address (0 = no cap)."
    )
    storage_quota_bytes: int = Field(
        1_000_000_000,
        ge=0,
        description="Bytes each account may keep stored (responses, stored chat completions, "
        "files); a request that would store more gets a 400 storage_quota_exceeded "
        "(0 = no quota).",
    )
    file_max_bytes: int = Field(
        200_000_000,
        ge=1,
        description="Largest file (POST /v1/files, or a completed upload), in bytes; larger: 413.",
    )
    upload_part_max_bytes: int = Field(
        64_000_000, ge=1, description="Largest part of an upload (POST /v1/uploads/{id}/parts)."
    )
    batch_runner: bool = Field(
        True, description="Run batch lines in this process (off: it only accepts batches)."
    )
    batch_concurrency: int = Field(
        16, ge=1, description="Batch lines this process runs at once at most (over all batches)."
    )
    batch_rate_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Share of a key's RPM / TPM / concurrency limits its batch lines may use.",
    )
    batch_max_lines: int = Field(50_000, ge=1, description="Requests one batch may hold at most.")
    batch_window_seconds: int = Field(
        86_400,
        ge=1,
        description="How long a batch may run ('24h' is its completion window); then `expired`.",
    )
    batch_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="A claimed batch line is run again by any replica if its claim is not "
        "renewed for this long (its process died).",
    )
    upstream_retries: int = Field(
        2, ge=0, description="Upstream failures retried on another deployment (before 1st byte)."
    )
    upstream_retry_deadline: float = Field(
        30.0, gt=0, description="Seconds all tries of one upstream request may take together."
    )
    upstream_allowed_fails: int = Field(
        3, ge=1, description="Failures in a row before a deployment cools down."
    )
    upstream_cooldown_seconds: float = Field(
        30.0, gt=0, description="How long a failing deployment gets no traffic."
    )
    upstream_probe_seconds: float = Field(
        10.0, ge=0, description="Active health probe (GET /models) interval; 0 = off."
    )

    def database_url_or_default(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tokendock.db').resolve()}"

    def cookies_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        return bool(self.base_url and self.base_url.startswith("https://"))

    def instance_name(self) -> str:
        return self.instance_id or f"{socket.gethostname()}:{self.port}"
