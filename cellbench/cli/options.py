"""Options of the ``cellbench`` command group, handed to commands as a value.

``--offline`` belongs to the group (``cellbench --offline datasets pull X``) and, through
:func:`add_shared_options`, to every command below it as well (``cellbench datasets pull X
--offline``): either spelling sets :attr:`CliOptions.offline` in the value commands receive with
``click.pass_obj``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import click

#: Key in ``click.Context.meta`` holding the command path being run (for error messages).
COMMAND_KEY = "cellbench.command"


@dataclass(frozen=True)
class CliOptions:
    """Options of the ``cellbench`` group that commands read (``click.pass_obj``).

    Attributes:
        offline: True with ``--offline``; None defers to ``CELLBENCH_OFFLINE``
            (:func:`cellbench.settings.offline`).
    """

    offline: bool | None = None


def _offline_after_subcommand(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Fold a subcommand's ``--offline`` into the options value its callback receives."""
    ctx.meta[COMMAND_KEY] = ctx.command_path
    options = ctx.obj if isinstance(ctx.obj, CliOptions) else CliOptions()
    if value:
        options = dataclasses.replace(options, offline=True)
    ctx.obj = options


def offline_option() -> click.Option:
    """A fresh ``--offline`` flag for one command (the group's, repeated after a subcommand)."""
    return click.Option(
        ["--offline"],
        is_flag=True,
        default=False,
        expose_value=False,
        callback=_offline_after_subcommand,
        help="Never touch the network (same as `cellbench --offline` or CELLBENCH_OFFLINE=1).",
    )


def add_shared_options(group: click.Group) -> None:
    """Give every command and subgroup under ``group`` the shared options (``--offline``)."""
    for command in group.commands.values():
        add_shared_options_to(command)


def add_shared_options_to(command: click.Command) -> None:
    """Give one command (and, for a group, every command under it) the shared options."""
    if not any("--offline" in p.opts for p in command.params):
        command.params.append(offline_option())
    if isinstance(command, click.Group):
        add_shared_options(command)


class OneSpellingOption(click.Option):
    """An option whose first name is its one spelling; later names are hidden old spellings.

    Old spellings keep working (scripts do not break) but help shows only the current one, so
    every command documents one spelling per option.
    """

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        """Help line with the first spelling only."""
        opts = self.opts
        self.opts = opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


def one_spelling(*names: str, **kwargs: Any) -> Any:
    """``click.option`` with :class:`OneSpellingOption` (first name shown, the rest accepted)."""
    return click.option(*names, cls=OneSpellingOption, **kwargs)


def _scheduler(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from cellbench.parallel import resolve_scheduler

    try:
        return resolve_scheduler(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


def scheduler_option(what: str) -> Any:
    """``--scheduler``: run ``what`` as Dask tasks (local pool or a distributed scheduler)."""
    return click.option(
        "--scheduler",
        default=None,
        callback=_scheduler,
        metavar="threads|processes|synchronous|tcp://HOST:8786",
        help=f"Run {what} as Dask tasks on a local pool or a dask.distributed scheduler "
        "(default: $DASK_SCHEDULER_ADDRESS if set, else in this process as before).",
    )


class LocalPath(click.Path):
    """``click.Path(path_type=Path)`` for what a command writes on this machine: URLs refused.

    pathlib folds ``s3://bucket/x`` into the local path ``s3:/bucket/x``: without this check a
    folder named ``s3:`` is written where the user meant a bucket, and the command says it
    wrote ``s3:/bucket/x``. A ``file://`` URL is the local path it names.

    Args:
        hint: Added to the refusal (what to do instead), e.g. ``"; publish with --to URL"``.
        **kwargs: :class:`click.Path`'s arguments.
    """

    def __init__(self, hint: str = "", **kwargs: Any) -> None:
        from pathlib import Path

        kwargs.setdefault("path_type", Path)
        super().__init__(**kwargs)
        self.hint = hint

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The local path; a URL fails with one line."""
        from cellbench.store.location import is_remote

        if isinstance(value, str):
            if is_remote(value):
                self.fail(
                    f"{value} is a URL; this is written on this machine{self.hint}", param, ctx
                )
            value = value.removeprefix("file://")
        return super().convert(value, param, ctx)


class PathOrUrl(click.ParamType):
    """An output that may go to object storage: a local ``Path``, or an fsspec URL as ``str``.

    Args:
        file: The output is one file (a report): checked when the command starts, so that a
            destination that cannot be written fails before the work, not after it. A local
            path must not be a folder and its nearest existing parent must be a writable
            folder; a URL's filesystem must answer (endpoint, bucket and credentials).
    """

    name = "path|url"

    def __init__(self, file: bool = False) -> None:
        self.file = file

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """``str`` for a URL, ``Path`` otherwise (``-`` stays ``-``: standard output)."""
        from pathlib import Path

        from cellbench.store.location import is_remote, local_path

        if not isinstance(value, str):
            return value
        out: Path | str = value if is_remote(value) else local_path(value)
        if self.file and value != "-":
            problem = _unwritable(out)
            if problem:
                self.fail(f"{value}: {problem}", param, ctx)
        return out


#: URL schemes whose first path component is a bucket (or container) that must exist.
_BUCKET_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


def _unwritable(out: Any) -> str:
    """Why the file ``out`` (a ``Path`` or a URL) cannot be written, or ``""``."""
    import os
    from pathlib import Path

    if isinstance(out, str):
        from cellbench.store.remote import filesystem

        try:
            fs, key = filesystem(out)
            bucket = key.split("/")[0]
            if out.split("://")[0] in _BUCKET_SCHEMES and not fs.exists(bucket):
                return f"there is no bucket {bucket!r} (or these credentials cannot see it)"
        except Exception as err:  # network and backend errors have no common base class
            return f"cannot be reached ({type(err).__name__}: {err})"
        return ""
    path = Path(out)
    if path.is_dir():
        return "is a folder (name the file to write)"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return ""
