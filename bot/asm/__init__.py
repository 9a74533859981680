"""The School Manager API served on the Apple port (ASM-API.md), beside the DEP API."""
