"""The `hotline` command. Each sub-command group lives in its own module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="hotline",
    help="Phone calls answered and placed by a speech-to-speech AI agent.",
    no_args_is_help=True,
    add_completion=False,
)

# Modules that register commands on `app` (or add sub-apps to it) when imported.
_COMMAND_MODULES = (
    "serve", "demo", "call", "db", "business", "template", "calls", "messages", "keys",
    "recordings", "bench", "fleet",
)


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"hotline.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hotline.cli.{name}":
                raise


def main() -> None:
    _register()
    app()
