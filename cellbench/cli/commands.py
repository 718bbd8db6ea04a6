"""Registry of CLI command groups; one module per group lives beside this file."""

from __future__ import annotations

import click

from cellbench.cli.datasets import datasets
from cellbench.cli.leaderboard import leaderboard
from cellbench.cli.score import score
from cellbench.cli.submit import submit

ALL: list[click.Command] = [datasets, score, submit, leaderboard]
