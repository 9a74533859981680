"""Apple mode: Apple's School Manager / Business API as the source of servers and devices, and
the server tokens a person downloads from Apple School Manager and drops into mdmbot."""
