"""Backups that restore (every table, in dependency order), key rotation and scheduled backups."""
