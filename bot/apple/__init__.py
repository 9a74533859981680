"""Adapter: the client of Apple's real School Manager / Business API (Apple mode)."""
