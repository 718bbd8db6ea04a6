"""Registry of CLI command groups; one module per group lives beside this file."""

from __future__ import annotations

import click

ALL: list[click.Command] = []
