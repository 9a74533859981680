"""Block Kit builders: messages, modals, the App Home (no Slack calls, no database)."""
