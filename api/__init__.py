"""Custom Vision-compatible HTTP API."""
