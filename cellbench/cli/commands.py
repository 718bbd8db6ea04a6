"""Registry of CLI command groups; one module per group lives beside this file."""

from __future__ import annotations

import click

from cellbench.cli.cache import cache
from cellbench.cli.convert import convert, validate
from cellbench.cli.datasets import datasets
from cellbench.cli.leaderboard import leaderboard
from cellbench.cli.score import score, score_ctc
from cellbench.cli.server import receipt_group, serve, server_group, worker
from cellbench.cli.submit import submit
from cellbench.cli.train import predict_cmd, train_cmd, tune_cmd

ALL: list[click.Command] = [
    datasets,
    score,
    score_ctc,
    convert,
    validate,
    train_cmd,
    predict_cmd,
    tune_cmd,
    submit,
    leaderboard,
    cache,
    serve,
    worker,
    server_group,
    receipt_group,
]
