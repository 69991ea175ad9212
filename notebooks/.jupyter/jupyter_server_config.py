# `make lab` puts this folder first on JUPYTER_CONFIG_PATH. Uploads past tornado's 10 MiB websocket message limit
# (a phone photo) made the server drop the connection: the kernel never heard of the file. A .py, not a .json: a
# .json's tornado_settings replaced the user's own (their headers, ...) whole, while .update() adds this one key to them.
c = get_config()  # noqa: F821 - traitlets gives a config file get_config
c.ServerApp.tornado_settings.update({"websocket_max_message_size": 256 * 2**20})
