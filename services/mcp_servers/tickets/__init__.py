"""``tickets``: a small ticket system on SQLite, with read-only and critical (write) tools."""
