"""Apple mode: Apple's School Manager / Business API as the source of servers and devices."""
