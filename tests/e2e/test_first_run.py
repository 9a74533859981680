"""The README's first screen, verbatim: `mdmbot serve --no-slack` on SQLite with nothing set up,
and the `curl` that shows it answering."""

from __future__ import annotations

import json
import os
import re
import shlex
import urllib.request
from pathlib import Path

import pytest

from bot.cli.main import build_parser
from bot.cli.serve_options import check_options
from core.settings import Settings
from tests.dep_client import call
from tests.processes import BotProcess, free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def _first_screen() -> tuple[list[str], str, str]:
    text = README.read_text()
    run = re.search(r"^pip install \. && mdmbot (serve --no-slack)$", text, re.M)
    curl = re.search(r"^curl (http://127\.0\.0\.1:3000/\S+) +# (.+)$", text, re.M)
    assert run and curl, "the README shows the run command and its curl"
    return shlex.split(run.group(1)), curl.group(1), curl.group(2)


def test_without_slack_the_device_assignment_service_defaults_to_port_8443(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MDMBOT_DEP_PORT", raising=False)
    args = build_parser().parse_args(_first_screen()[0])
    check_options(Settings(_env_file=None), args)  # type: ignore[call-arg]
    assert args.dep_port == 8443


def test_the_readme_run_command_answers_its_curl_on_sqlite_with_nothing_set_up(
    tmp_path: Path,
) -> None:
    command, url, shown = _first_screen()
    port, dep_port = free_port(), free_port()
    home = tmp_path / "home"
    # The README's command, on free ports: a test never binds a fixed one.
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "PORT": str(port),
        "MDMBOT_DEP_PORT": str(dep_port), "MDMBOT_METRICS_PORT": "0",
        "MDMBOT_HOST": "127.0.0.1", "MDMBOT_DEP_HOST": "127.0.0.1",
    }  # fmt: skip
    process = BotProcess(env, tmp_path / "serve.log", *command)
    url = url.replace(":3000/", f":{port}/")
    answer: dict[str, str] = {}

    def answering() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                answer.update(json.loads(response.read()))
                return True
        except OSError:
            return False

    try:
        process.wait_until(answering)
        assert answer == json.loads(shown)
        session = f"http://127.0.0.1:{dep_port}/session"
        assert call(session, {})[:2] == (400, "OAUTH_HEADER_MISSING")
    finally:
        assert process.terminate() == 0
    data = home / ".local" / "share" / "mdmbot"
    assert {"mdmbot.db", "secret.key"} <= {p.name for p in data.iterdir()}


def _readme_env_example() -> dict[str, str]:
    text = README.read_text()
    block = re.search(r"^ *```sh\n( *SLACK_BOT_TOKEN=.*?)^ *```", text, re.M | re.S)
    assert block, "the README shows a .env example"
    lines = [line.strip() for line in block.group(1).splitlines()]
    # `docker run --env-file` rules: NAME=value taken literally, `#` lines are comments.
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize("mode", ["serve", "serve --http"])
def test_the_readme_env_example_left_as_is_is_refused_in_one_line(
    tmp_path: Path, mode: str
) -> None:
    from tests.processes import run_cli

    example = _readme_env_example()
    assert example["SLACK_BOT_TOKEN"].endswith("…"), "the example keeps its placeholder"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **example}
    env["MDMBOT_DATA_DIR"] = str(tmp_path / "data")
    done = run_cli(shlex.split(mode), env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mdmbot: Invalid setting SLACK_BOT_TOKEN: it still holds the example's “…”: paste the "
        "value Slack shows."
    ]
    assert not (tmp_path / "data" / "mdmbot.db").exists(), "nothing was created"
