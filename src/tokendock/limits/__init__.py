"""Rate limits: requests/min, tokens/min and concurrency, exact, in-process or in Redis."""
