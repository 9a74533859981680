"""Devices: the inventory, its CSV import, the per-server change log, unlinking a server."""
