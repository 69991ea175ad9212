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


def _server(tmp_path, monkeypatch, files: dict[str, str]):
    """A ServerApp with the user's Jupyter config ``files`` ({name: text}) and make lab's, loaded as `jupyter lab` loads them."""
    from jupyter_server.serverapp import ServerApp

    user = tmp_path / "user"
    user.mkdir()
    for name, text in files.items():
        (user / name).write_text(text)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(user))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(ROOT / "notebooks" / ".jupyter"))  # as `make lab` sets it
    server = ServerApp()
    server.load_config_file(suppress_errors=False)  # what `jupyter lab` reads at its start
    return server


@pytest.mark.parametrize("user_config", [None, "jupyter_server_config.json", "jupyter_server_config.py"])
def test_make_labs_upload_limit_adds_to_the_users_own_tornado_settings(tmp_path, monkeypatch, user_config):
    files = {}
    if user_config and user_config.endswith(".json"):
        files[user_config] = json.dumps({"ServerApp": {"tornado_settings": {"headers": HEADERS}}})
    elif user_config:
        files[user_config] = f"c.ServerApp.tornado_settings = {{'headers': {HEADERS!r}}}\n"
    server = _server(tmp_path, monkeypatch, files)
    assert server.tornado_settings == {"websocket_max_message_size": LIMIT, **({"headers": HEADERS} if user_config else {})}
    assert upload_limit() == LIMIT  # and the explorer's upload button says so


@pytest.mark.parametrize("form", ["json", "py", "py_update"])
@pytest.mark.parametrize("theirs", [2**30, 64 * 2**20])
def test_a_users_own_websocket_message_limit_is_kept(tmp_path, monkeypatch, form, theirs):
    """A user's own websocket_max_message_size (1 GiB for their big TIFFs; 64 MiB as a cap on a shared server) was
    replaced by make lab's 256 MiB: the config's .update() wins over the user's files (JUPYTER_CONFIG_PATH comes
    first). make lab's limit now applies only where the user's config sets none; the upload button says theirs."""
    settings = {"headers": HEADERS, "websocket_max_message_size": theirs}
    if form == "json":
        files = {"jupyter_server_config.json": json.dumps({"ServerApp": {"tornado_settings": settings}})}
    else:
        files = {"jupyter_server_config.py": f"c.ServerApp.tornado_settings{' = ' if form == 'py' else '.update'}({settings!r})\n"}
    assert _server(tmp_path, monkeypatch, files).tornado_settings == settings
    assert upload_limit() == theirs


def test_make_labs_limit_applies_under_a_users_update_that_leaves_it_unset(tmp_path, monkeypatch):
    files = {"jupyter_server_config.py": f"c.ServerApp.tornado_settings.update({{'headers': {HEADERS!r}}})\n"}
    assert _server(tmp_path, monkeypatch, files).tornado_settings == {"headers": HEADERS, "websocket_max_message_size": LIMIT}
    assert upload_limit() == LIMIT
