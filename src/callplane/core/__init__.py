"""Shared ground for every layer: clock, id source, error roots and settings."""
