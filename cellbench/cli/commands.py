"""Registry of CLI command groups; one module per group lives beside this file."""

from __future__ import annotations

import click

from cellbench.cli.datasets import datasets

ALL: list[click.Command] = [datasets]
