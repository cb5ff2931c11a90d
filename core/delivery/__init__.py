"""Outbox to platform: pacing, retries, splitting long messages, keeping secrets out of logs."""
