"""JSON Schema → GBNF grammars for structured outputs and tool calls, bounded before admission."""
