"""Exceptions shared by the subcommands."""

from __future__ import annotations


class CommandError(Exception):
    """A fatal error of a subcommand (bad input file, CRI not answering): printed as one `Error:` line, exit 1."""
