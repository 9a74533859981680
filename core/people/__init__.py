"""People and their lifecycle: who acted, password changes and departures, expiry alerts."""
