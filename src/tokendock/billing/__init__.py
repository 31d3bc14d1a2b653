"""Money: integer micro-credits, prices, and the append-only ledger with holds."""
