"""How to install an optional extra: from this checkout, never by name from a package index.

The distribution is installed from the repository (`make install-dev`, `pip install -e .`);
a hint naming `pip install '<name>[extra]'` would fetch whatever a package index holds under
that name instead.
"""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """The commands that add `extra` to the checkout's virtual environment."""
    return (
        f"install the {extra} extra from the repository root: `make install-dev` (every "
        f"extra), or `.venv/bin/pip install -c requirements.lock -e '.[{extra}]'`"
    )


class MissingExtra(RuntimeError):
    """A command needs an optional extra that is not installed."""

    def __init__(self, what: str, extra: str, missing_module: str | None) -> None:
        missing = f" ({missing_module} is missing)" if missing_module else ""
        super().__init__(f"{what} needs the {extra} extra{missing}; {install_hint(extra)}")
        self.extra = extra
