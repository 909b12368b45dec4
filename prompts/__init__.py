"""Prompt templates and seed tasks: data, not code. A package only so they ship inside the wheel."""
