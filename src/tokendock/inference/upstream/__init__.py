"""OpenAI-compatible upstream servers: the HTTP client, routing across deployments with health
and retries, and the backend that relays their answers."""
