"""Registry of CLI command groups; one module per group lives beside this file."""

from __future__ import annotations

import click

from cellbench.cli.datasets import datasets
from cellbench.cli.score import score, score_ctc

ALL: list[click.Command] = [datasets, score, score_ctc]
