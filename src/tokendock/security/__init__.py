"""Secrets: API key minting and digests, password hashing. Pure functions, no I/O."""
