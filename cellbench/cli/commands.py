"""Registry of CLI command groups; one module per group lives beside this file."""

from __future__ import annotations

import click

from cellbench.cli.datasets import datasets
from cellbench.cli.score import score
from cellbench.cli.train import predict_cmd, train_cmd, tune_cmd

ALL: list[click.Command] = [datasets, score, train_cmd, predict_cmd, tune_cmd]
