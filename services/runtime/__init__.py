"""Shared runtime plumbing (bus, settings, logging, telemetry, policy engine). No business logic."""
