"""``python -m murmura``: the ``murmura`` command."""

from murmura.cli import app

app(prog_name="murmura")
