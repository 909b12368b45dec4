"""The `selfloop` command. main.py builds the parser from the command modules (each adds its commands and maps
them to their functions) and turns every error into one line."""

from selfloop.cli.main import _one_line, build_parser, main

__all__ = ["_one_line", "build_parser", "main"]
