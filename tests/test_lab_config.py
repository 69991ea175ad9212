"""``make lab``'s server config (notebooks/.jupyter/, first on JUPYTER_CONFIG_PATH) adds its upload limit to a user's own
Jupyter config: loaded as the server loads it, a user's ``tornado_settings`` (their headers, ...) were replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlm_lab.widgets_images import upload_limit

ROOT = Path(__file__).parents[1]
LIMIT = 256 * 2**20
HEADERS = {"Content-Security-Policy": "frame-ancestors 'self' https://lab.example.org"}  # a lab embedded in a portal


@pytest.mark.parametrize("user_config", [None, "jupyter_server_config.json", "jupyter_server_config.py"])
def test_make_labs_upload_limit_adds_to_the_users_own_tornado_settings(tmp_path, monkeypatch, user_config):
    from jupyter_server.serverapp import ServerApp

    user = tmp_path / "user"
    user.mkdir()
    if user_config and user_config.endswith(".json"):
        (user / user_config).write_text(json.dumps({"ServerApp": {"tornado_settings": {"headers": HEADERS}}}))
    elif user_config:
        (user / user_config).write_text(f"c.ServerApp.tornado_settings = {{'headers': {HEADERS!r}}}\n")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(user))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(ROOT / "notebooks" / ".jupyter"))  # as `make lab` sets it
    server = ServerApp()
    server.load_config_file(suppress_errors=False)  # what `jupyter lab` reads at its start
    assert server.tornado_settings == {"websocket_max_message_size": LIMIT, **({"headers": HEADERS} if user_config else {})}
    assert upload_limit() == LIMIT  # and the explorer's upload button says so
