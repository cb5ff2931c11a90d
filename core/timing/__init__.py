"""Clocks, the scheduler, cron entries and mission timelines."""
