"""The Slack adapter: the bolt app, its listeners, Block Kit builders and the Web API gateway."""
