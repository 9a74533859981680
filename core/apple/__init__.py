"""Apple mode: mdmbot in front of a real Apple School Manager (sync state, tokens from Apple)."""
