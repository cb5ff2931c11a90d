"""Personas answering messages and reacting to events: the engine, the router, compiled personas, message types."""
