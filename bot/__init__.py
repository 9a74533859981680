"""mdmbot adapters: Slack app, HTTP server, scheduler and command line."""
