"""`retrain`, the command line: one module per group of commands (`runs`, `champion`, `serving`, `maintenance`),
each adding its parsers beside its handlers; `app` builds the parser and runs a command."""

from retrainer.cli.app import main

__all__ = ["main"]
