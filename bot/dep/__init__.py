"""The device assignment service adapter: Apple's DEP API for MDM servers (DEP-API.md)."""
