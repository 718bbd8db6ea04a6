"""The ``cellbench`` command line: a thin click layer over the library.

Commands parse arguments, call one library function and print its result. Errors derived from
:class:`cellbench.errors.CellbenchError` are printed as one line on stderr with a non-zero exit
status; so is a missing optional dependency (the extra to install is named, see
:mod:`cellbench.extras`); Ctrl-C exits with status 130 (what was being written is left out, not
half-written: stores, prediction sets, reports and entries are written to a temporary name and
renamed into place). Anything else is a bug and keeps its traceback.

Options shared by every command (:mod:`cellbench.cli.options`): ``--offline`` is accepted before
or after the subcommand.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cellbench._version import __version__
from cellbench.cli.options import (
    COMMAND_KEY,
    CliOptions,
    add_shared_options,
    add_shared_options_to,
)
from cellbench.errors import CellbenchError, one_line
from cellbench.extras import missing_extra

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class CellbenchGroup(click.Group):
    """Click group that reports user errors, missing extras and Ctrl-C as one clean line.

    Its registered commands (:data:`cellbench.cli.commands.LAZY`) are imported when first
    looked up, so a process only imports the command it runs.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Registered (lazy) commands in registry order, then the ones defined here."""
        from cellbench.cli.commands import LAZY

        return list(LAZY) + sorted(n for n in self.commands if n not in LAZY)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, imported on first use and given the shared options."""
        if cmd_name not in self.commands:
            from cellbench.cli.commands import LAZY, load

            if cmd_name not in LAZY:
                return None
            command = load(cmd_name)
            self.add_command(command)
            add_shared_options_to(command)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, turning user errors into a one-line message and exit code."""
        try:
            return super().invoke(ctx)
        except CellbenchError as err:
            # an error from a DataLoader worker arrives with the worker's traceback folded in
            err = one_line(err)
            click.secho(f"error: {err}", fg="red", err=True)
            ctx.exit(err.exit_code)
        except ImportError as err:
            extra = missing_extra(err, f"`{ctx.meta.get(COMMAND_KEY, ctx.command_path)}`")
            if extra is None:
                raise
            click.secho(f"error: {extra}", fg="red", err=True)
            ctx.exit(extra.exit_code)
        except KeyboardInterrupt:
            click.secho("interrupted", fg="red", err=True)
            # Cleanup ran while the interrupt unwound. Exit now: an interrupt that reaches a
            # worker thread (zarr's event loop) at interpreter shutdown would otherwise turn
            # exit 130 into a kill by SIGINT (seen: exit -2 after "interrupted").
            import os

            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)


@click.group(cls=CellbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cellbench")
@click.option(
    "--offline",
    is_flag=True,
    default=False,
    help="Never touch the network (same as CELLBENCH_OFFLINE=1).",
)
@click.pass_context
def main(ctx: click.Context, offline: bool) -> None:
    """cellbench: curated microscopy datasets, baselines, scoring and leaderboards."""
    # passed on as a value to the commands that may touch the network (None: the setting)
    ctx.obj = CliOptions(offline=True if offline else None)


@main.command()
def env() -> None:
    """Print versions of cellbench and its key dependencies (paste into bug reports)."""
    from cellbench.envinfo import environment_report

    for key, value in environment_report().items():
        click.echo(f"{key:<16} {value}")


@main.command()
@click.option(
    "--out",
    type=click.Path(),
    default="demo-output",
    show_default=True,
    help="Output folder (an earlier demo folder there is replaced).",
)
@click.option("--epochs", default=40, show_default=True, help="U-Net training epochs.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when available), cpu, cuda or cuda:N.",
)
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.pass_obj
def demo(
    options: CliOptions, out: str, epochs: int, device: str, bootstrap: int, quiet: bool
) -> None:
    """Pull the default dataset, train a U-Net, submit it, rank it and publish a leaderboard."""
    from cellbench.demo import run_demo

    run_demo(
        out,
        epochs=epochs,
        device=device,
        progress=not quiet,
        n_bootstrap=bootstrap,
        offline=options.offline,
    )


add_shared_options(main)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
