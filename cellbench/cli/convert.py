"""``cellbench convert`` and ``cellbench validate``: community formats in and out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cellbench.cli.options import PathOrUrl, scheduler_option
from cellbench.cli.output import emit_json, json_option
from cellbench.formats.registry import format_names

_OPTION_HELP = "Format option NAME=VALUE (repeat); see `cellbench convert --help` for the list."


def _formats_help() -> str:
    from cellbench.formats.registry import get_format

    lines = []
    for name in format_names():
        try:
            fmt = get_format(name)
        except ImportError:  # a format whose optional dependency is missing
            lines.append(f"{name}: (optional dependency not installed)")
            continue
        opts = "; ".join(f"{k}: {v}" for k, v in fmt.options.items())
        lines.append(f"{name}: {fmt.description}" + (f" [options: {opts}]" if opts else ""))
    return "\n\n".join(lines)


class _FormatsHelp(click.Command):
    """Lists the registered formats (and their options) at the end of ``--help``."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        formatter.write_text("Formats:")
        with formatter.indentation():
            for paragraph in _formats_help().split("\n\n"):
                formatter.write_paragraph()
                formatter.write_text(paragraph)


@click.command(cls=_FormatsHelp)
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.option("--from", "from_format", required=True, help="Format of SRC (see below).")
@click.option(
    "--to",
    "to",
    required=True,
    help="Target: zarr (a canonical cellbench store), hf (Hugging Face Parquet) or a format.",
)
@click.argument("dest", type=PathOrUrl())
@click.option("--option", "-o", "pairs", multiple=True, metavar="NAME=VALUE", help=_OPTION_HELP)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--shard",
    is_flag=True,
    help="With --to zarr: write store format 4, each image plane's chunks in one Zarr v3 shard "
    "file (up to 8 x 8 tiles): far fewer files and objects, for object storage and large sets.",
)
@scheduler_option("the reading, checking and writing of SRC (one task per image or sequence)")
def convert(
    src: Path,
    from_format: str,
    to: str,
    dest: Path | str,
    pairs: tuple[str, ...],
    quiet: bool,
    shard: bool,
    scheduler: str | None,
) -> None:
    """Convert SRC (format --from) into DEST (format --to).

    DEST is written under a temporary name beside it and renamed when complete: after an error
    or Ctrl-C nothing is left at DEST. With --to zarr, DEST may be a URL (s3://bucket/x.zarr):
    the store is built locally, verified, then uploaded, its root zarr.json last. Problems of
    SRC are listed all at once (exit 1). With --scheduler, each image or sequence of SRC is
    read, checked and (into a store) written by one Dask task, and this process assembles DEST
    in SRC's order: the result is identical to the sequential one. On a cluster, SRC and DEST's
    folder must be on a shared disk (for a URL DEST, the cellbench cache: CELLBENCH_HOME).
    """
    from cellbench.formats.convert import STORE_TARGETS, overlap_note, parse_options
    from cellbench.formats.convert import convert as do_convert

    known = format_names()
    for flag, value, allowed in (
        ("--from", from_format, known),
        ("--to", to, [*STORE_TARGETS, *known]),
    ):
        if value not in allowed:
            raise click.BadParameter(
                f"{value!r} is not one of {', '.join(allowed)}", param_hint=flag
            )
    if scheduler is not None:
        from cellbench.formats.registry import get_format

        if not get_format(from_format).per_item:
            click.echo(
                f"note: format {from_format} has no per-item reader; reading it sequentially "
                f"(--scheduler {scheduler} not used)",
                err=True,
            )
            scheduler = None
    if shard and to != "zarr":
        raise click.BadParameter(f"applies to --to zarr, not {to}", param_hint="--shard")
    tally: dict[str, int] = {}
    out = do_convert(
        src,
        from_format,
        to,
        dest,
        options=parse_options(pairs),
        progress=not quiet,
        tally=tally,
        scheduler=scheduler,
        shard=shard,
    )
    click.echo(
        f"converted {src} ({from_format}, {tally.get('samples', 0)} samples) to {out} ({to})"
    )
    note = overlap_note(tally)
    if note:
        click.echo(f"note: {note}")


@click.command(cls=_FormatsHelp)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", required=True, help="Format of PATH (see below).")
@click.option("--option", "-o", "pairs", multiple=True, metavar="NAME=VALUE", help=_OPTION_HELP)
@json_option
def validate(path: Path, fmt: str, pairs: tuple[str, ...], as_json: bool) -> None:
    """List every problem of PATH read as --format, one line each; exit 1 when any."""
    from cellbench.formats.convert import parse_options, validate_path

    if fmt not in format_names():
        raise click.BadParameter(
            f"{fmt!r} is not one of {', '.join(format_names())}", param_hint="--format"
        )
    problems = validate_path(path, fmt, parse_options(pairs))
    if as_json:
        emit_json({"path": str(path), "format": fmt, "problems": problems})
    else:
        for line in problems:
            click.echo(line)
        click.echo(
            f"{path}: {len(problems)} problem(s) found" if problems else f"{path}: valid {fmt}",
            err=bool(problems),
        )
    if problems:
        sys.exit(1)
