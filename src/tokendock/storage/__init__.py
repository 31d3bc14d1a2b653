"""Tables, the database handle and migrations. Knows tables, not rules."""
