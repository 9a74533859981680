"""End-to-end tests: the installed `mdmbot` command run as an operator would run it."""
