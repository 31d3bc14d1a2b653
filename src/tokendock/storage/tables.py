"""The schema. Money columns are BIGINT micro-credits; the database enforces what it can.

Invariants enforced here as well as in code:
- `accounts.balance >= 0` (CHECK): the available balance never goes negative.
- `api_keys.spent <= spend_limit` when a limit is set (CHECK).
- `ledger_entries.idempotency_key` is UNIQUE: a movement is recorded at most once.
- `holds.status` moves open → settled once (guarded UPDATE … WHERE status = 'open').
- `usage_records.request_id` and `redemption_codes.digest` are UNIQUE.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    true,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("balance", BigInteger, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Rate limits: the tier names defaults in settings; the columns override them (NULL = tier).
    Column("tier", String(32), nullable=False, server_default="default"),
    Column("rpm_limit", Integer, nullable=True),
    Column("tpm_limit", Integer, nullable=True),
    Column("concurrency_limit", Integer, nullable=True),
    CheckConstraint("balance >= 0", name="balance_non_negative"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("last4", String(4), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("spend_limit", BigInteger, nullable=True),
    Column("spent", BigInteger, nullable=False, default=0),
    Column("allowed_models", Text, nullable=True),  # JSON list; NULL = every model
    Column("rpm_limit", Integer, nullable=True),  # NULL = the account tier's default
    Column("tpm_limit", Integer, nullable=True),
    Column("concurrency_limit", Integer, nullable=True),
    CheckConstraint("spend_limit IS NULL OR spent <= spend_limit", name="within_spend_limit"),
    CheckConstraint("spent >= 0", name="spent_non_negative"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    # grant, topup, redemption, hold, capture, release, adjustment
    Column("kind", String(16), nullable=False),
    # Change of the account's available balance; Σ amount = accounts.balance.
    Column("amount", BigInteger, nullable=False),
    # For capture entries: the amount charged out of the hold (the hold already moved it).
    Column("charged", BigInteger, nullable=False, default=0),
    Column("hold_id", String(40), nullable=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("reference", String(400), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(8), nullable=False),  # open, settled
    Column("captured", BigInteger, nullable=True),
    Column("request_id", String(64), nullable=False),
    Column("owner", String(200), nullable=False),  # the process instance that holds it
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount >= 0", name="amount_non_negative"),
)
Index("ix_holds_open", holds.c.status, holds.c.expires_at)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("model", String(200), nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("cost", BigInteger, nullable=False),
    Column("status", String(32), nullable=False),
    Column("finish_reason", String(32), nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("ttft_ms", Integer, nullable=True),
    Column("user", String(256), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deployment", String(200), nullable=True),
    Column("estimated", Boolean, nullable=False, server_default=false()),
    # The API it came in by: chat.completions, completions, embeddings, responses, messages.
    Column("endpoint", String(32), nullable=True),
    # Of prompt_tokens, those read from a KV cache (prefix caching), billed at the cached price.
    Column("cached_tokens", Integer, nullable=False, server_default="0"),
)
Index("ix_usage_account_created", usage_records.c.account_id, usage_records.c.created_at)

# Chat completions created with `store: true`, kept for their account (services/stored_chat.py).
# `seq` orders them (pagination); `meta` is the `metadata` object of ≤16 string pairs, also
# kept one pair a row in stored_chat_metadata for the list's `metadata[key]=value` filters.
stored_chat_completions = Table(
    "stored_chat_completions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=True),
    Column("model", String(200), nullable=False),
    Column("meta", Text, nullable=True),  # the `metadata` object, as JSON
    Column("messages", Text, nullable=False),  # the request's messages, as JSON
    Column("completion", Text, nullable=False),  # the whole chat.completion object, as JSON
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("size", BigInteger, nullable=False, server_default="0"),  # bytes, in account_storage
)
Index(
    "ix_stored_chat_completions_account_seq",
    stored_chat_completions.c.account_id,
    stored_chat_completions.c.seq,
)
stored_chat_metadata = Table(
    "stored_chat_metadata",
    metadata,
    Column("seq", Integer, ForeignKey("stored_chat_completions.seq"), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(512), nullable=False),
)
Index("ix_stored_chat_metadata_key_value", stored_chat_metadata.c.key, stored_chat_metadata.c.value)

redemption_codes = Table(
    "redemption_codes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("last4", String(4), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("redeemed_by", Integer, ForeignKey("accounts.id"), nullable=True),
    Column("redeemed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("amount > 0", name="amount_positive"),
)

idempotent_requests = Table(
    "idempotent_requests",
    metadata,
    Column("key_id", Integer, ForeignKey("api_keys.id"), primary_key=True),
    Column("idempotency_key", String(200), primary_key=True),
    Column("body_digest", String(64), nullable=False),
    Column("status", String(8), nullable=False),  # running, done
    Column("response_status", Integer, nullable=True),
    Column("response_body", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


# Responses API (web/api/responses.py) kept with `store` (the default): what was asked (JSON
# text), the conversation before it (`context`: its previous response's items), its output and
# usage. Read only by the account that made them.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # queued, in_progress, completed, …
    Column("background", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("previous_response_id", String(64), nullable=True),
    Column("request", Text, nullable=False),
    Column("input_items", Text, nullable=False),
    Column("context", Text, nullable=False),
    Column("output", Text, nullable=False),
    Column("usage", Text, nullable=True),
    Column("metadata", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("incomplete_reason", String(32), nullable=True),
    Column("size", BigInteger, nullable=False, server_default="0"),  # bytes, in account_storage
)
Index("ix_responses_account_created", responses.c.account_id, responses.c.created_at)

# Conversations API (services/conversations.py): a conversation and its items, read only by
# the account that made them. `seq` orders the items (list pages, a response's prompt prefix);
# each row's `size` (its JSON text's bytes) is counted in account_storage with the row.
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("metadata", Text, nullable=True),
    Column("size", BigInteger, nullable=False, server_default="0"),
)
Index("ix_conversations_account", conversations.c.account_id)
conversation_items = Table(
    "conversation_items",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(64), ForeignKey("conversations.id"), nullable=False),
    Column("id", String(64), nullable=False),
    Column("item", Text, nullable=False),  # the item, as JSON
    Column("size", BigInteger, nullable=False, server_default="0"),
)
Index(
    "ix_conversation_items_conversation_seq",
    conversation_items.c.conversation_id,
    conversation_items.c.seq,
)
Index(
    "ix_conversation_items_conversation_id",
    conversation_items.c.conversation_id,
    conversation_items.c.id,
)

# Bytes each account keeps stored (responses, stored chat completions, files): Σ of its rows'
# `size`, changed in the same transaction as the rows themselves (storage/quota.py), so the
# per-account quota is read in one primary-key lookup and never drifts from the rows.
account_storage = Table(
    "account_storage",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("used", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("used >= 0", name="used_non_negative"),
)

# Operator overrides of catalog models, set on the admin page: a model can be switched off, and
# its prices changed, without editing the catalog file. NULL prices: the catalog's.
model_settings = Table(
    "model_settings",
    metadata,
    Column("model_id", String(200), primary_key=True),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("input_price", String(32), nullable=True),
    Column("output_price", String(32), nullable=True),
    Column("cached_input_price", String(32), nullable=True),  # None: the input price
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# Live dashboard sessions: the cookie names one by a random id, kept here as its SHA-256.
# Ending a session deletes its row; a cookie without a row is anonymous (security/sessions.py).
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# Sign-ups and failed log-ins of the last hour, for the hourly caps the per-minute rate limiter
# cannot express (services/throttle.py). `subject` and `address` are digests, never raw values.
throttle_events = Table(
    "throttle_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subject", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
)
Index("ix_throttle_events_subject_at", throttle_events.c.subject, throttle_events.c.at)

# Who may no longer run work: an account disabled / deleted / re-enabled, a key revoked — one
# row per change, written in the same transaction as the change. Every replica reads the rows
# past the last id it has seen (a primary-key range, every ~0.5 s) and ends the running work
# they cover (services/access.py). No foreign key: a deleted account's row must outlive it.
access_events = Table(
    "access_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, nullable=False),
    Column("key_id", Integer, nullable=True),  # NULL: the whole account
    Column("reason", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# -- Files, uploads and batches (issue 21) ---------------------------------------------------
# A file's bytes live in the database, so every replica reads every file: `blob_chunks` rows of
# at most CHUNK bytes (storage/files.py), keyed by the id of what they belong to (a file, or
# an upload's part; no foreign key: parts become a file's content without copying). A file is
# visible only once `status` is 'processed': a file still being written ('uploading') is
# nobody's, counts against no quota, and is deleted by the sweep if its writer died.
files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("bytes", BigInteger, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),  # uploading, processed
    # The blob ids whose chunks, in order, are the content (JSON list); NULL: the file's own id.
    Column("parts", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("size", BigInteger, nullable=False, server_default="0"),  # bytes, in account_storage
)
Index("ix_files_account_created", files.c.account_id, files.c.created_at)

blob_chunks = Table(
    "blob_chunks",
    metadata,
    Column("blob_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("bytes", BigInteger, nullable=False),  # declared at creation
    Column("mime_type", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # pending, completed, cancelled, expired
    Column("file_id", String(40), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
Index("ix_uploads_account_created", uploads.c.account_id, uploads.c.created_at)

upload_parts = Table(
    "upload_parts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("upload_id", String(40), ForeignKey("uploads.id"), nullable=False, index=True),
    Column("bytes", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # uploading, added
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A batch: what `POST /v1/batches` (api "openai") or `/v1/messages/batches` ("anthropic")
# created; its lines are `batch_lines`. `lease_*`: the replica validating or finalizing it.
batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("api", String(16), nullable=False),  # openai, anthropic
    Column("endpoint", String(64), nullable=False),
    Column("model", String(200), nullable=True),  # known once validated
    Column("input_file_id", String(40), nullable=True),
    Column("completion_window", String(8), nullable=False),
    Column("metadata", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("errors", Text, nullable=True),  # JSON list of {code, message, param, line}
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("succeeded", Integer, nullable=False, server_default="0"),
    Column("errored", Integer, nullable=False, server_default="0"),
    Column("canceled", Integer, nullable=False, server_default="0"),
    Column("expired", Integer, nullable=False, server_default="0"),
    Column("cost", BigInteger, nullable=False, server_default="0"),  # micro-credits charged
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("in_progress_at", DateTime(timezone=True), nullable=True),
    Column("finalizing_at", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
    Column("failed_at", DateTime(timezone=True), nullable=True),
    Column("expired_at", DateTime(timezone=True), nullable=True),
    Column("cancelling_at", DateTime(timezone=True), nullable=True),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
)
Index("ix_batches_account_created", batches.c.account_id, batches.c.created_at)
Index("ix_batches_status", batches.c.status)

# One request of a batch. `state` pending → running (claimed: `lease` is the fencing token,
# incremented by every claim) → done; the result and the line's settlement are written in one
# transaction guarded by `lease` (storage/batch_lines.py), so a line has at most one result.
batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(40), ForeignKey("batches.id"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(12), nullable=False),  # pending, running, done
    Column("lease", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(200), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("outcome", String(12), nullable=True),  # succeeded, errored, canceled, expired
    Column("result", Text, nullable=True),  # JSON: {"status_code", "body"} or {"error": …}
    Column("cost", BigInteger, nullable=False, server_default="0"),
)
Index("ix_batch_lines_state", batch_lines.c.batch_id, batch_lines.c.state)
