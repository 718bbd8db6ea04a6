"""``cellbench datasets``: list, inspect, pull, verify, export and import datasets."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cellbench.cli.options import CliOptions, LocalPath, scheduler_option
from cellbench.cli.output import emit_json, id_column, is_stdout, json_option
from cellbench.errors import StoreError
from cellbench.tasks import task_names


def _console() -> Console:
    from cellbench.cli.output import console

    return console()


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
@json_option
def list_(as_json: bool) -> None:
    """Table of every dataset: id, version, tasks, size, license, whether it is cached."""
    from cellbench.catalog import Catalog
    from cellbench.registry import imported, store_path

    rows = []
    for card in Catalog().cards():
        path = store_path(card.id, card.version)
        rows.append(
            {
                "id": card.id,
                "version": card.version,
                "tasks": list(card.tasks),
                "samples": card.size.get("samples"),
                "bytes": card.size.get("bytes"),
                "license": card.license,
                "cached": path.exists(),
                "path": str(path) if path.exists() else None,
                "imported": False,
            }
        )
    for key, entry in sorted(imported().items()):
        ident, version = key.split("@", 1)
        rows.append(
            {
                "id": ident,
                "version": version,
                "tasks": [],
                "samples": None,
                "bytes": None,
                "license": None,
                "cached": True,
                "path": entry["path"],
                "imported": True,
            }
        )
    if as_json:
        emit_json(rows)
        return
    table = Table(show_lines=False)
    id_column(table, "id", [r["id"] for r in rows])
    for col in ("version", "tasks", "samples", "size", "license", "cached"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["imported"]:
            table.add_row(r["id"], r["version"], "(imported)", "", "", "", r["path"])
            continue
        table.add_row(
            r["id"],
            r["version"],
            ", ".join(r["tasks"]),
            str(r["samples"] if r["samples"] is not None else "?"),
            _human_bytes(r["bytes"]),
            r["license"],
            "yes" if r["cached"] else "",
        )
    _console().print(table)


@datasets.command()
@click.argument("ref")
@json_option
def info(ref: str, as_json: bool) -> None:
    """Show the dataset card of REF (``id`` or ``id@version``)."""
    from cellbench.catalog import Catalog, parse_ref
    from cellbench.registry import load, store_path

    catalog = Catalog()
    ident, version = parse_ref(ref)
    if ident not in catalog.ids():
        store = load(ref)
        card = store.card
        if as_json:
            emit_json(
                {
                    **dict(card),
                    "id": store.id,
                    "version": store.version,
                    "tasks": list(store.tasks),
                    "samples": len(store),
                    "splits": store.splits,
                    "path": str(store.path),
                    "imported": True,
                }
            )
            return
        console = _console()
        console.print(
            f"[bold]{escape(str(card.get('title', store.id)))}[/bold]  "
            f"({escape(f'{store.id}@{store.version}')})"
        )
        console.print(f"imported store: {store.path}")
        console.print(f"tasks: {', '.join(store.tasks)}; samples: {len(store)}; {store.splits}")
        return
    card = catalog.card(ident, version)
    path = store_path(card.id, card.version)
    if as_json:
        emit_json(
            {
                **card.to_dict(),
                "versions": catalog.versions(card.id),
                "cached": path.exists(),
                "path": str(path) if path.exists() else None,
                "imported": False,
            }
        )
        return
    console = _console()

    def say(text: str) -> None:  # card text, printed as written (it may hold [brackets])
        console.print(text, markup=False)

    console.print(f"[bold]{escape(card.title)}[/bold]  ({escape(card.ref)})")
    say(f"tasks:       {', '.join(card.tasks)}")
    say(f"license:     {card.license}")
    say(
        f"annotation:  {card.annotation.get('provenance')}"
        + (f" - {card.annotation['details']}" if card.annotation.get("details") else "")
    )
    if card.homepage:
        say(f"homepage:    {card.homepage}")
    say(f"versions:    {', '.join(catalog.versions(card.id))}")
    if card.size:
        say(
            f"size:        {card.size.get('samples', '?')} samples, "
            f"{_human_bytes(card.size.get('bytes'))}"
        )
    for table_name, names in card.class_names.items():
        say(f"classes ({table_name}): {', '.join(names)}")
    if card.groups:
        say(f"groups:      {', '.join(card.groups)}")
    pixel = card.extra.get("pixel_size")
    if isinstance(pixel, dict) and pixel.get("known") is False:
        say(f"pixel size:  unknown - {str(pixel.get('note', '')).strip()}")
    say(f"\n{card.description}\n")
    console.print(f"[bold]splits[/bold]: {escape(str(card.splits.get('method')))}")
    for key, value in card.splits.items():
        if key != "method":
            say(f"  {key}: {value}")
    if card.sources:
        console.print("[bold]sources[/bold]:")
        for name, src in card.sources.items():
            urls = src.get("urls") or [src.get("url")]
            say(f"  {name}: {', '.join(str(u) for u in urls)}")
            if src.get("manual"):
                say(
                    f"    manual download: {src.get('filename')} from {src.get('manual')} "
                    "(login or license: cellbench does not download it; `pull` says where "
                    "to put it)"
                )
            sha = src.get("member_sha256") or src.get("sha256")
            if str(sha).strip().lower() == "unpinned":
                from cellbench.store.fetch.pinning import recorded_sha256

                seen = recorded_sha256(card.ref, name)
                note = f"; your first pull recorded {seen}" if seen else ""
                say(f"    sha256 unpinned upstream (the source publishes none{note})")
            elif sha:
                say(f"    sha256 {sha}")
    if card.checksums:
        console.print(f"[bold]store checksum[/bold]: {escape(str(card.checksums.get('store')))}")
    say(f"cached:      {path if path.exists() else 'no (cellbench datasets pull)'}")
    console.print(f"\n[bold]citation[/bold]:\n{escape(card.citation)}")


@datasets.command()
@click.argument("ref")
@click.option(
    "--force",
    is_flag=True,
    help="Rebuild even if the store is already cached (repairs or upgrades it).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option(
    "--public",
    is_flag=True,
    help="Get the public variant: every image, train/val labels, the hidden split without "
    "labels (from --server, or built here from the complete store).",
)
@click.option("--server", default=None, help="Challenge server to download the variant from.")
@click.option("--challenge", default=None, help="Challenge id on --server.")
@click.option("--token", default=None, help="Token, if the server asks for one.")
@click.option(
    "--hidden-split", default="test", show_default=True, help="Split left without labels."
)
@click.option(
    "--to",
    "to",
    default=None,
    metavar="URL",
    help="Also upload the verified store to an fsspec URL (s3://bucket/prefix; endpoint and "
    "credentials from the AWS_* variables); its root zarr.json is written last.",
)
@click.option(
    "--shard",
    is_flag=True,
    help="Leave the store in store format 4 (Zarr v3 shards: far fewer files and objects; "
    "built and checked as usual, then converted with its content checked); with --to, "
    "upload that.",
)
@click.pass_obj
def pull(
    options: CliOptions,
    ref: str,
    force: bool,
    quiet: bool,
    public: bool,
    server: str | None,
    challenge: str | None,
    token: str | None,
    hidden_split: str,
    to: str | None,
    shard: bool,
) -> None:
    """Fetch REF's sources, verify them and build its canonical store in the cache."""
    from cellbench.registry import pull as do_pull

    if shard and (public or server):
        raise StoreError("--shard converts the complete store; it cannot be combined with --public")
    if to is not None:
        if public or server:
            raise StoreError("--to uploads the complete store; it cannot be combined with --public")
        from cellbench.registry import pull_to

        store = pull_to(
            ref, to, force=force, progress=not quiet, offline=options.offline, shard=shard
        )
        click.echo(f"{store.ref}: {len(store)} samples {store.splits} at {store.path}")
        click.echo(f"checksum {store.checksum}")
        return
    if public:
        _pull_public(ref, force, server, challenge, token, hidden_split)
        return
    if server:
        raise StoreError("--server downloads public variants only: add --public")
    store = do_pull(ref, force=force, progress=not quiet, offline=options.offline, shard=shard)
    click.echo(f"{store.id}@{store.version}: {len(store)} samples {store.splits} at {store.path}")
    click.echo(f"checksum {store.checksum}")


@datasets.command()
@click.argument("ref")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def pin(ref: str, quiet: bool) -> None:
    """Write REF's recorded source sha256s and store digest into its card (maintainers).

    Sources marked `sha256: unpinned` get the sha256 your first verified pull recorded in the
    lock file; the store is rebuilt from the cache and its digest written to checksums.store.
    """
    from cellbench.registry import pin as do_pin

    result = do_pin(ref, progress=not quiet)
    for name, sha in result["sources"].items():
        click.echo(f"source {name}: sha256 {sha}")
    click.echo(f"store checksum {result['store']}")
    click.echo(f"written to {result['card']}")


@datasets.command()
@click.argument("ref")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@scheduler_option("the checks (one task per array)")
def verify(ref: str, quiet: bool, scheduler: str | None) -> None:
    """Recompute every checksum of REF's store and report every problem at once."""
    from cellbench.registry import store_location
    from cellbench.store.format import CURRENT_FORMAT, is_current
    from cellbench.store.integrity import repair_hint, verify_store
    from cellbench.store.location import is_url

    if is_url(ref):
        from cellbench.store.zarr_store import DatasetStore

        remote = DatasetStore.open(ref)
        problems = remote.verify(progress=not quiet, scheduler=scheduler)
        if problems:
            for line in problems:
                click.secho(line, fg="red", err=True)
            raise StoreError(f"{ref}: {len(problems)} problem(s) found; {repair_hint(remote.ref)}")
        n = len(remote.manifest["arrays"])
        click.echo(f"{remote.ref}: OK ({n} arrays verified at {ref}, digest {remote.checksum})")
        return
    path = store_location(ref)
    problems = verify_store(path, progress=not quiet, scheduler=scheduler)
    if problems:
        for line in problems:
            click.secho(line, fg="red", err=True)
        raise StoreError(f"{ref}: {len(problems)} problem(s) found; {repair_hint(ref)}")
    from cellbench.store.zarr_store import DatasetStore

    store = DatasetStore.open(path)
    n = len(store.manifest["arrays"])
    click.echo(f"{store.ref}: OK ({n} arrays verified, digest {store.checksum})")
    if not is_current(store.format):
        click.echo(
            f"note: store format {store.format.version}: its manifest covers array content "
            f"only, not metadata; `cellbench datasets upgrade {store.ref}` converts it to "
            f"format {CURRENT_FORMAT.version}"
        )


@datasets.command()
@click.argument("ref")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option(
    "--shard",
    is_flag=True,
    help="Convert to store format 4: each image plane's chunks in one Zarr v3 shard file "
    "(far fewer files and objects; same content, new digest).",
)
def upgrade(ref: str, quiet: bool, shard: bool) -> None:
    """Convert REF's store to the current store format (verified first; never automatic)."""
    from cellbench.registry import store_location
    from cellbench.registry import upgrade as do_upgrade
    from cellbench.store.format import detect_format

    before = detect_format(store_location(ref)).version
    store = do_upgrade(ref, progress=not quiet, shard=shard)
    if before == store.format.version:
        click.echo(f"{store.ref}: already store format {before}; nothing to do")
        return
    click.echo(
        f"{store.ref}: upgraded from store format {before} to {store.format.version} "
        f"(checksum {store.checksum})"
    )


@datasets.command()
@click.argument("ref")
@click.option(
    "--to",
    "target",
    default=None,
    help="Export format: zarr (a copy of the store), hf (Hugging Face Parquet shards with a "
    "dataset card) or a format of `cellbench convert` (ctc, coco, tiff, geff, ...).",
)
@click.argument(
    "dest",
    required=False,
    type=LocalPath(hint="; `cellbench datasets pull ID --to URL` puts a store on object storage"),
)
@click.option(
    "--max-shard-size",
    default="500MB",
    show_default=True,
    help="Largest Parquet shard (--to hf, --push-to-hub).",
)
@click.option(
    "--push-to-hub",
    "repo_id",
    default=None,
    metavar="REPO",
    help="Also push to the Hugging Face Hub as REPO (user/name).",
)
@click.option("--private", is_flag=True, help="Create the Hub repository as private.")
@click.option("--split", default=None, help="Only this split (format exports; default all).")
@click.option(
    "--option",
    "-o",
    "pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Option of the --to format (repeat), as in `cellbench convert`.",
)
@click.option(
    "--token",
    envvar="HF_TOKEN",
    default=None,
    show_envvar=True,
    help="Hugging Face token (default: the stored login).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def export(
    options: CliOptions,
    ref: str,
    target: str | None,
    dest: Path | None,
    max_shard_size: str,
    repo_id: str | None,
    private: bool,
    split: str | None,
    pairs: tuple[str, ...],
    token: str | None,
    quiet: bool,
) -> None:
    """Export REF's store: `--to zarr|hf|ctc|coco|tiff|... DEST` and/or `--push-to-hub REPO`.

    Formats other than zarr and hf are written under a temporary name beside DEST and renamed
    when complete (nothing is left at DEST after an error or Ctrl-C).
    """
    from cellbench.formats.registry import format_names
    from cellbench.registry import export_hf, export_zarr, push_to_hub

    if target is None and repo_id is None:
        raise click.UsageError("give --to zarr DEST, --to hf DEST or --push-to-hub REPO")
    if target is not None and dest is None:
        raise click.UsageError(f"--to {target} needs a destination folder DEST")
    if target is None and dest is not None:
        raise click.UsageError(f"DEST {dest} given without --to zarr or --to hf")
    known = ["zarr", "hf", *format_names()]
    if target is not None and target not in known:
        raise click.BadParameter(f"{target!r} is not one of {', '.join(known)}", param_hint="--to")
    if (pairs or split) and target in ("zarr", "hf"):
        raise click.UsageError(f"--option and --split are for format exports, not --to {target}")
    if target not in (None, "zarr", "hf") and dest is not None:
        from cellbench.formats.convert import export_dataset, parse_options

        out = export_dataset(
            ref, target, dest, split=split, options=parse_options(pairs), progress=not quiet
        )
        click.echo(f"exported {ref} to {out} ({target})")
    elif target == "zarr" and dest is not None:
        out = export_zarr(ref, dest)
        click.echo(f"exported {ref} to {out}")
    elif target == "hf" and dest is not None:
        out = export_hf(ref, dest, max_shard_size=max_shard_size, progress=not quiet)
        click.echo(f"exported {ref} to {out} (Hugging Face Parquet)")
    if repo_id is not None:
        url = push_to_hub(
            ref,
            repo_id,
            token=token,
            private=private or None,
            max_shard_size=max_shard_size,
            progress=not quiet,
            offline=options.offline,
        )
        click.echo(f"pushed {ref} to {url}")


@datasets.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--copy",
    is_flag=True,
    help="Copy a Zarr store into the cache (Hugging Face datasets are always converted into it).",
)
@click.option("--id", "dataset_id", default=None, help="Dataset id of the imported store.")
@click.option("--version", default=None, help="Dataset version of the imported store.")
@click.option(
    "--task",
    type=click.Choice(list(task_names())),
    default=None,
    help="Task of a foreign Hugging Face dataset (turns on column mapping).",
)
@click.option("--image-column", default=None, help="Column with the input image.")
@click.option(
    "--label-column",
    default=None,
    help="Class label (classification) or label image (segmentation) column.",
)
@click.option("--target-column", default=None, help="Target image column (augmented microscopy).")
@click.option("--id-column", default=None, help="Column with sample ids (default: split-row).")
@click.option("--axes", default=None, help="Axis order of the image column, e.g. yx, yxc, czyx.")
@click.option(
    "--metadata-column",
    "metadata_columns",
    multiple=True,
    help="Metadata column to keep (repeatable; default: every other scalar column).",
)
@click.option("--title", default="", help="Title of a foreign dataset.")
@click.option("--license", "license_", default="unknown", help="License of a foreign dataset.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def import_(
    path: Path,
    copy: bool,
    dataset_id: str | None,
    version: str | None,
    task: str | None,
    image_column: str | None,
    label_column: str | None,
    target_column: str | None,
    id_column: str | None,
    axes: str | None,
    metadata_columns: tuple[str, ...],
    title: str,
    license_: str,
    quiet: bool,
) -> None:
    """Import PATH: a cellbench Zarr store (verified, registered) or a Hugging Face dataset.

    A Hugging Face dataset (save_to_disk or Parquet folder) exported by cellbench is rebuilt
    bit-exactly (checked against its digest). Any other dataset needs its columns mapped:
    --task, --id, --version, --image-column and --label-column or --target-column.
    """
    from cellbench.registry import import_path

    mapping_options = {
        "--image-column": image_column,
        "--label-column": label_column,
        "--target-column": target_column,
        "--id-column": id_column,
        "--axes": axes,
        "--metadata-column": metadata_columns or None,
        "--title": title or None,
    }
    used = [k for k, v in mapping_options.items() if v is not None]
    mapping = None
    if task is not None:
        from cellbench.store.hf import ColumnMapping

        missing = [o for o, v in (("--id", dataset_id), ("--version", version)) if not v]
        if missing:
            raise click.UsageError(f"--task needs {' and '.join(missing)} for a foreign dataset")
        mapping = ColumnMapping(
            task=task,
            dataset_id=str(dataset_id),
            version=str(version),
            image_column=image_column or "image",
            label_column=label_column,
            target_column=target_column,
            id_column=id_column,
            axes=axes,
            metadata_columns=tuple(metadata_columns) if metadata_columns else None,
            title=title,
            license=license_,
        )
        dataset_id = version = None
    elif used:
        raise click.UsageError(
            f"{', '.join(used)} need --task (column mapping of a foreign dataset)"
        )
    store = import_path(
        path,
        copy=copy,
        mapping=mapping,
        dataset_id=dataset_id,
        version=version,
        progress=not quiet,
    )
    click.echo(f"imported {store.id}@{store.version} ({len(store)} samples) from {path}")
    click.echo(f"store {store.path}, checksum {store.checksum}")
    if mapping is None and dataset_id is None and version is None:
        from cellbench.store.hf import HFSource, detect_source

        if detect_source(path) != "zarr":
            exported = (HFSource.open(path).metadata or {}).get("source_digest")
            if exported == store.checksum:
                click.echo(f"bit-exact: rebuilt digest {store.checksum} = the exported store's")


@datasets.command("croissant")
@click.argument("ref")
@click.option(
    "--out",
    type=LocalPath(allow_dash=True),
    default="-",
    show_default=True,
    help="Write the JSON-LD here ('-': stdout).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (when the store is built).")
@click.pass_obj
def croissant_(options: CliOptions, ref: str, out: Path, quiet: bool) -> None:
    """Print REF's Croissant 1.1 JSON-LD description (pulls the store if needed)."""
    import json

    from cellbench.catalog import Catalog, parse_ref
    from cellbench.croissant import croissant as describe
    from cellbench.registry import load, pull

    ident = parse_ref(ref)[0]
    if ident in Catalog().ids():
        store = pull(ref, progress=not quiet, offline=options.offline)
        card = Catalog().card(store.id, store.version)
    else:
        store, card = load(ref), None
    text = json.dumps(describe(card, store), indent=1, ensure_ascii=False) + "\n"
    if is_stdout(out):
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    click.echo(f"wrote {out}", err=True)


@datasets.command()
@click.argument("ref")
def cite(ref: str) -> None:
    """Print how to cite REF as a BibTeX entry."""
    from cellbench.catalog import Catalog, parse_ref
    from cellbench.citation import bibtex
    from cellbench.croissant import store_card
    from cellbench.registry import load

    ident, version = parse_ref(ref)
    catalog = Catalog()
    card = catalog.card(ident, version) if ident in catalog.ids() else store_card(load(ref))
    click.echo(bibtex(card), nl=False)


def _pull_public(
    ref: str,
    force: bool,
    server: str | None,
    challenge: str | None,
    token: str | None,
    hidden_split: str,
) -> None:
    from cellbench.challenge.public import build_public, download_public

    if server:
        store, info = download_public(ref, server, challenge, token, force)
        click.echo(f"{store.id}@{store.version} (public, challenge {info['id']}) at {store.path}")
        click.echo(f"  label commitment {info['label_commitment']}")
        click.echo(f"  archive sha256 {info['public_store_sha256']}")
    else:
        store = build_public(ref, hidden_split, force)
        click.echo(
            f"{store.id}@{store.version} (public, {hidden_split} without labels) at {store.path}"
        )
    click.echo(f"  {len(store)} samples {store.splits}; checksum {store.checksum}")
