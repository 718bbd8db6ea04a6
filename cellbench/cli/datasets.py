"""``cellbench datasets``: list, inspect, pull, verify, export and import datasets."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cellbench.errors import StoreError


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _human_bytes(n: float | None) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@click.group()
def datasets() -> None:
    """Curated datasets: list, info, pull, verify, export, import."""


@datasets.command("list")
def list_() -> None:
    """Table of every dataset: id, version, tasks, size, license, whether it is cached."""
    from cellbench.catalog import Catalog
    from cellbench.registry import imported, store_path

    table = Table(show_lines=False)
    for col in ("id", "version", "tasks", "samples", "size", "license", "cached"):
        table.add_column(col)
    for card in Catalog().cards():
        cached = "yes" if store_path(card.id, card.version).exists() else ""
        table.add_row(
            card.id,
            card.version,
            ", ".join(card.tasks),
            str(card.size.get("samples", "?")),
            _human_bytes(card.size.get("bytes")),
            card.license,
            cached,
        )
    for key, entry in sorted(imported().items()):
        ident, version = key.split("@", 1)
        table.add_row(ident, version, "(imported)", "", "", "", entry["path"])
    _console().print(table)


@datasets.command()
@click.argument("ref")
def info(ref: str) -> None:
    """Show the dataset card of REF (``id`` or ``id@version``)."""
    from cellbench.catalog import Catalog, parse_ref
    from cellbench.registry import load, store_path

    catalog = Catalog()
    ident, version = parse_ref(ref)
    if ident not in catalog.ids():
        store = load(ref)
        card = store.card
        console = _console()
        console.print(f"[bold]{card.get('title', store.id)}[/bold]  ({store.id}@{store.version})")
        console.print(f"imported store: {store.path}")
        console.print(f"tasks: {', '.join(store.tasks)}; samples: {len(store)}; {store.splits}")
        return
    card = catalog.card(ident, version)
    console = _console()
    console.print(f"[bold]{card.title}[/bold]  ({card.ref})")
    console.print(f"tasks:       {', '.join(card.tasks)}")
    console.print(f"license:     {card.license}")
    console.print(
        f"annotation:  {card.annotation.get('provenance')}"
        + (f" - {card.annotation['details']}" if card.annotation.get("details") else "")
    )
    if card.homepage:
        console.print(f"homepage:    {card.homepage}")
    console.print(f"versions:    {', '.join(catalog.versions(card.id))}")
    if card.size:
        console.print(
            f"size:        {card.size.get('samples', '?')} samples, "
            f"{_human_bytes(card.size.get('bytes'))}"
        )
    for table_name, names in card.class_names.items():
        console.print(f"classes ({table_name}): {', '.join(names)}")
    if card.groups:
        console.print(f"groups:      {', '.join(card.groups)}")
    console.print(f"\n{card.description}\n")
    console.print(f"[bold]splits[/bold]: {card.splits.get('method')}")
    for key, value in card.splits.items():
        if key != "method":
            console.print(f"  {key}: {value}")
    if card.sources:
        console.print("[bold]sources[/bold]:")
        for name, src in card.sources.items():
            urls = src.get("urls") or [src.get("url")]
            console.print(f"  {name}: {', '.join(str(u) for u in urls)}")
            sha = src.get("member_sha256") or src.get("sha256")
            if sha:
                console.print(f"    sha256 {sha}")
    if card.checksums:
        console.print(f"[bold]store checksum[/bold]: {card.checksums.get('store')}")
    path = store_path(card.id, card.version)
    console.print(f"cached:      {path if path.exists() else 'no (cellbench datasets pull)'}")
    console.print(f"\n[bold]citation[/bold]:\n{card.citation}")


@datasets.command()
@click.argument("ref")
@click.option("--force", is_flag=True, help="Rebuild even if the store is already cached.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def pull(ref: str, force: bool, quiet: bool) -> None:
    """Fetch REF's sources, verify them and build its canonical store in the cache."""
    from cellbench.registry import pull as do_pull

    store = do_pull(ref, force=force, progress=not quiet)
    click.echo(f"{store.id}@{store.version}: {len(store)} samples {store.splits} at {store.path}")
    click.echo(f"checksum {store.checksum}")


@datasets.command()
@click.argument("ref")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def verify(ref: str, quiet: bool) -> None:
    """Recompute every checksum of REF's store and report every mismatch."""
    from cellbench.registry import load

    store = load(ref)
    problems = store.verify(progress=not quiet)
    if problems:
        for line in problems:
            click.secho(line, fg="red", err=True)
        raise StoreError(f"{store.id}@{store.version}: {len(problems)} problem(s) found")
    n = len(store.manifest["arrays"])
    click.echo(f"{store.id}@{store.version}: OK ({n} arrays verified, digest {store.checksum})")


@datasets.command()
@click.argument("ref")
@click.option(
    "--to",
    "target",
    type=click.Choice(["zarr"]),
    required=True,
    help="Export format.",
)
@click.argument("dest", type=click.Path(path_type=Path))
def export(ref: str, target: str, dest: Path) -> None:
    """Export REF's store to DEST (a Zarr copy)."""
    from cellbench.registry import export_zarr

    out = export_zarr(ref, dest)
    click.echo(f"exported {ref} to {out}")


@datasets.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--copy", is_flag=True, help="Copy the store into the cache.")
def import_(path: Path, copy: bool) -> None:
    """Register a user's own canonical store at PATH (verified first)."""
    from cellbench.registry import import_store

    store = import_store(path, copy=copy)
    click.echo(f"imported {store.id}@{store.version} ({len(store)} samples) from {store.path}")
