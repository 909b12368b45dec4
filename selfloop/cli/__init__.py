"""The `selfloop` command. main.py builds the parser from the command modules (each adds its commands and maps
them to their functions) and turns every error into one line."""

from selfloop.cli.main import build_parser, main, one_line

__all__ = ["build_parser", "main", "one_line"]
