"""The storage behind the log, persona state, the outbox, subscriptions and runs (SQLite)."""
