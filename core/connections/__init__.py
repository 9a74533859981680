"""Connections to MDM servers: how each server's tokens are installed, and install state."""
