"""Presidio recognizers of the DLP guard, built per language from shipped data."""
