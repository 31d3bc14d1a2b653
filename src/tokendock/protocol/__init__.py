"""OpenAI wire format: request schemas (pydantic, strict) and response shapes. No behaviour."""
