"""`python -m bot.cli`: the same as the `mdmbot` script."""

from bot.cli.main import main

raise SystemExit(main())
