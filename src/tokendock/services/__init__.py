"""Use cases: the one place where (later) billing, limits and inference meet."""
