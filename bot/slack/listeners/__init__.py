"""Slack listeners: each acks, calls one use case, renders the result."""
