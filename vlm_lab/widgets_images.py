"""The explorer's image handling: the preview thumbnail, and why an upload is not used (in words,
with the fix) or how many frames it holds (``vlm_lab.widgets`` shows them)."""

from __future__ import annotations

import io
import json
import os

from vlm_lab.errors import DataError

PREVIEW_PX = 128  # the 64x64 shapes are upscaled (nearest) so they are visible; larger images shrink to fit


def thumbnail(image):
    """A preview at most PREVIEW_PX on its long side, aspect kept (a 24 MP photo is not sent to the browser)."""
    from PIL import Image

    scale = PREVIEW_PX / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


TORNADO_MESSAGE_LIMIT = 10 * 2**20  # tornado's default websocket_max_message_size, which Jupyter servers keep


def upload_limit() -> int:
    """The largest upload that reaches the kernel, in bytes: the Jupyter server's websocket message limit.

    The browser sends an upload as one message; a larger one makes the server drop the connection (the page
    reconnects and the kernel never hears of the file). Read from the server's config files as it reads them
    (``jupyter_config`` then ``jupyter_server_config``, .py and .json, merged over the config path: the kernel
    inherits the server's environment; ``make lab`` puts notebooks/.jupyter/ on it, 256 MiB); tornado's 10 MiB
    when none sets it. A limit set on the server's command line is not seen, so the label then says 10 MB, on the
    safe side.
    """
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config import Application, LazyConfigValue

    reader = Application()  # not .instance(): a kernel's own application (IPKernelApp) stays as it is
    for name in ("jupyter_config", "jupyter_server_config"):
        try:
            reader.load_config_file(name, path=jupyter_config_path())
        except Exception:  # noqa: BLE001 - a broken config file: the server logs it; the label stays on the safe side
            continue
    settings = reader.config.ServerApp.get("tornado_settings", {})
    if isinstance(settings, LazyConfigValue):  # .update() in a .py config: onto the server's default, {}
        settings = settings.get_value({})
    limit = settings.get("websocket_max_message_size") if isinstance(settings, dict) else None
    return limit if isinstance(limit, int) and limit > 0 else TORNADO_MESSAGE_LIMIT


def megabytes(n: int) -> str:
    """A message limit as the button says it: ``10 MB`` for 10 MiB (a file of 10.4 decimal MB still fits)."""
    return f"{n / 2**20:.3g} MB"


def unreadable(name: str, content: bytes, e: DataError, *, upload: bool = True) -> str:
    """Why an upload (or with ``upload=False`` a file given by its path) is not used, and what to do, without
    the BytesIO repr PIL puts in its messages. ``content``: the file's bytes, or at least its first 16."""
    from PIL import UnidentifiedImageError

    if not content:
        return f"{name!r} is empty (0 bytes): {'upload it again, or check the file on your disk' if upload else 'check the file'}"
    why = e.__cause__
    if why is None:  # readable, but refused (over the pixel limit, a strip the processor would blow up): the message has the fix
        return f"{name!r}: {e}"
    if isinstance(why, UnidentifiedImageError):
        if content[4:8] == b"ftyp" and content[8:12] in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return (f"{name!r} is a HEIC/HEIF photo, which Pillow cannot read without pillow-heif: export it as JPEG, "
                    "or `pip install pillow-heif` and run `pillow_heif.register_heif_opener()` before uploading")
        return f"{name!r} is not in an image format Pillow reads (PNG, JPEG, GIF, WebP, BMP, TIFF...): convert it to PNG or JPEG"
    # PIL's reason (a truncated file, a broken chunk...)
    return (f"Cannot read {name!r} as an image ({why}); the file may be damaged or cut short, or use a variant of its "
            "format Pillow does not read: save it again as PNG or JPEG")  # fmt: skip


def typed_path(text: str) -> str:
    """The file a path typed or pasted into the explorer names: as given when that exists, else read as pasted from
    elsewhere: in quotes (Windows' "Copy as path", a terminal's drop), shell-escaped (``my\\ photos/a\\ (1).png``), a
    ``file://`` URL (a file manager's copy); ``~`` and ``$VARS`` expanded; relative to the notebook's folder when not
    to the kernel's. Unchanged (stripped, expanded) when none exists."""
    import shlex
    from urllib.parse import unquote, urlparse
    from urllib.request import url2pathname

    text = text.strip()
    readings = [text]
    if text.startswith("file://"):
        readings.append(url2pathname(unquote(urlparse(text).path)))
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        readings.append(text[1:-1])
    if os.name != "nt":  # a backslash is a folder separator on Windows, not an escape
        try:
            words = shlex.split(text)
        except ValueError:  # an unclosed quote
            words = []
        if len(words) == 1:
            readings.append(words[0])
    # a relative path is looked for in the kernel's folder (the project root), then beside the notebook: JupyterLab's
    # Copy Path is relative to the server's root, which `make lab` puts there (JupyterLab names the notebook to its kernel)
    notebook = os.environ.get("JPY_SESSION_NAME", "")
    folders = ["", os.path.dirname(notebook)] if os.path.isabs(notebook) else [""]
    for reading in readings:
        path = os.path.expandvars(os.path.expanduser(reading))
        for folder in folders:
            if os.path.exists(os.path.join(folder, path)):
                return os.path.join(folder, path)
    return os.path.expandvars(os.path.expanduser(text))


def unreadable_file(name: str, path: str, e: DataError) -> str:
    """``unreadable`` for the file at ``path`` (typed as ``name``); the error's own words when it has no bytes to
    judge (not found, a folder, no permission) or was read and refused (its message has the fix)."""
    if e.__cause__ is None:
        return str(e)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return str(e)
    return unreadable(name, head, e, upload=False)


def frame_count(content: bytes) -> int:
    """How many frames an upload holds (an animated GIF, WebP or PNG); the model sees the first."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(content)) as img:
            return int(getattr(img, "n_frames", 1))
    except Exception:  # noqa: BLE001 - it opened once already; a count is only a remark
        return 1
