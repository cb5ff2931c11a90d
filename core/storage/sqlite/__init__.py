"""The SQLite backend, one small class per concern over one shared :class:`Connection`."""
