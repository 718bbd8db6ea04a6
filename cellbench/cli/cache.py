"""``cellbench cache``: housekeeping of the local cache (downloads, stores, scratch)."""

from __future__ import annotations

import click


@click.group()
def cache() -> None:
    """The local cache: where it is, and removal of what killed runs left behind."""


@cache.command()
def clean() -> None:
    """Remove temporaries left by dead processes (never those of a running one)."""
    from cellbench.store.cache import cellbench_home
    from cellbench.store.scratch import clean_cache

    removed = clean_cache()
    home = cellbench_home()
    for path in removed:
        click.echo(f"removed {path.relative_to(home) if path.is_relative_to(home) else path}")
    click.echo(f"{len(removed)} stale temporar{'y' if len(removed) == 1 else 'ies'} removed")


@cache.command()
def where() -> None:
    """Print the cache folder (CELLBENCH_HOME)."""
    from cellbench.store.cache import cellbench_home

    click.echo(str(cellbench_home()))
