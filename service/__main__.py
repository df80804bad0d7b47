"""`python -m service` runs the `imagegen` command line."""

from service.cli import app

app(prog_name="imagegen")
