"""``cellbench export-model``: a training run's model in a standard model format."""

from __future__ import annotations

from pathlib import Path

import click

from cellbench.cli.options import LocalPath

#: Formats ``--to`` accepts.
FORMATS = ("bioimageio",)


@click.command("export-model")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--to",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="Format: bioimageio (a BioImage.IO 0.5 model package folder).",
)
@click.argument("dest", type=LocalPath())
@click.option(
    "--author",
    "authors",
    multiple=True,
    required=True,
    help="Author name for the package (repeat for several).",
)
@click.option("--license", "license_id", required=True, help="SPDX license id of the model.")
@click.option("--name", default=None, help="Model name (default: baseline, task and dataset).")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
def export_model(
    run_dir: Path,
    fmt: str,
    dest: Path,
    authors: tuple[str, ...],
    license_id: str,
    name: str | None,
    quiet: bool,
) -> None:
    """Write the model of training run RUN_DIR as a package at DEST (a new or empty folder).

    The BioImage.IO package holds rdf.yaml, TorchScript weights, a test input and output made
    by running the model, README.md and a cover; submit it back with a manifest of kind
    bioimageio.
    """
    from cellbench.progress import STEP_THRESHOLD_S, activity
    from cellbench.training.bioimageio import export_bioimageio

    with activity(f"exporting {run_dir} as {fmt}", not quiet, after_s=STEP_THRESHOLD_S):
        path = export_bioimageio(
            run_dir, dest, authors=list(authors), license=license_id, name=name
        )
    click.echo(f"wrote BioImage.IO model package {path}")
    from cellbench.submissions.bioimageio import read_package

    # what would keep `cellbench submit` from running it (valid BioImage.IO all the same)
    for problem in read_package(path).problems:
        click.secho(f"note: not submittable to cellbench as is: {problem}", fg="yellow", err=True)
