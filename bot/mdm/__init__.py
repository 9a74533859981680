"""The MDM adapter: clients of MDM servers' own APIs (NanoDEP, Fleet, a command)."""
