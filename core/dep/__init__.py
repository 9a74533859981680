"""The device assignment service's use cases: authentication, account, devices, profiles."""
