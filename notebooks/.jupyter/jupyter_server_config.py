# `make lab` puts this folder first on JUPYTER_CONFIG_PATH. Uploads past tornado's 10 MiB websocket message limit
# (a phone photo) made the server drop the connection: the kernel never heard of the file. A .py, not a .json: a
# .json's tornado_settings replaced the user's own (their headers, ...) whole.
# The limit is a default: a user's own websocket_max_message_size (their .json, their .py, larger or smaller) is
# kept. A plain .update() would override it: this folder comes first on the path, so its file is merged last.
from traitlets.config import LazyConfigValue


class UnlessSet(LazyConfigValue):
    """tornado_settings keys set only where the user's config leaves them unset (``dict.setdefault``), on top of
    whatever the user's files set (a dict, or their own ``.update()``)."""

    def __init__(self, defaults):
        super().__init__()
        self.defaults, self.earlier = dict(defaults), None

    def merge_into(self, other):
        if isinstance(other, LazyConfigValue):  # the user's .update(): applied first, then these where unset
            self.earlier = other
            return self
        return self.get_value(other)

    def get_value(self, initial):
        value = self.earlier.get_value(initial) if self.earlier is not None else dict(initial or {})
        for key, default in self.defaults.items():
            value.setdefault(key, default)
        return value

    def to_dict(self):  # what `jupyter lab --show-config` shows
        return {"setdefault": self.defaults}


c = get_config()  # noqa: F821 - traitlets gives a config file get_config
c.ServerApp.tornado_settings = UnlessSet({"websocket_max_message_size": 256 * 2**20})
