"""The `mdmbot` operator command line: parser, handlers and table output."""

from bot.cli.main import main

__all__ = ["main"]
