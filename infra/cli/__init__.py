"""The ``warden`` command line: :func:`main` and its parser in :mod:`warden.infra.cli.main`, and a
module per command group beside it (stack, data, training, simulation, bench, review, models, keys,
privacy, dead letters), each adding its parsers and running its commands."""

from warden.infra.cli.main import main

__all__ = ["main"]
