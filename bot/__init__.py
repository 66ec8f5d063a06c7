"""Slack adapter (Bolt for Python)."""
