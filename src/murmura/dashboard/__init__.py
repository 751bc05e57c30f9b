"""``murmura dashboard``: a read-only web page over run folders and a coordinator's state dir.

``sources`` reads (never writes) the files; ``app`` serves them with server-sent events;
``cli`` is the command. Starlette and uvicorn come with the ``murmura[dashboard]`` extra.
"""
