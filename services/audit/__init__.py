"""Audit: appends metadata-only events to hash chains in the AUDIT stream."""
