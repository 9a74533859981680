"""Events API: the App Home tab (departures are handled in lifecycle)."""

from __future__ import annotations

from typing import Any

from slack_bolt import App

from bot.slack.services import BotServices


def register(app: App, svc: BotServices) -> None:
    """Register event listeners."""

    @app.event("app_home_opened")
    def on_home(event: dict[str, Any]) -> None:
        if event.get("tab", "home") == "home":
            svc.refresh_home(event["user"])
