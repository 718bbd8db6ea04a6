"""Registry of CLI command groups; one module per group lives beside this file.

Commands are registered by name and loaded when used (:class:`cellbench.cli.CellbenchGroup`):
a process imports the module of the command it runs and nothing else, so ``cellbench
score-ctc`` does not pay for the dataset, training or server commands' imports (``rich``,
the store, the hub client).
"""

from __future__ import annotations

from importlib import import_module

import click

#: Command name -> ``module:attribute`` of the click command, in help order.
LAZY: dict[str, str] = {
    "datasets": "cellbench.cli.datasets:datasets",
    "score": "cellbench.cli.score:score",
    "score-ctc": "cellbench.cli.score:score_ctc",
    "convert": "cellbench.cli.convert:convert",
    "validate": "cellbench.cli.convert:validate",
    "train": "cellbench.cli.train:train_cmd",
    "predict": "cellbench.cli.train:predict_cmd",
    "tune": "cellbench.cli.train:tune_cmd",
    "export-model": "cellbench.cli.export:export_model",
    "submit": "cellbench.cli.submit:submit",
    "leaderboard": "cellbench.cli.leaderboard:leaderboard",
    "cache": "cellbench.cli.cache:cache",
    "serve": "cellbench.cli.server:serve",
    "worker": "cellbench.cli.server:worker",
    "server": "cellbench.cli.server:server_group",
    "receipt": "cellbench.cli.server:receipt_group",
}


def load(name: str) -> click.Command:
    """Import and return the registered command ``name``.

    Raises:
        KeyError: If no command of that name is registered.
    """
    module, attr = LAZY[name].split(":")
    command = getattr(import_module(module), attr)
    if command.name != name:  # the registry and the command must agree (tested)
        raise RuntimeError(f"{LAZY[name]} is named {command.name!r}, registered as {name!r}")
    return command
