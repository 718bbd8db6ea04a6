"""Options of the ``cellbench`` command group, handed to commands as a value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CliOptions:
    """Options of the ``cellbench`` group that commands read (``click.pass_obj``).

    Attributes:
        offline: True with ``--offline``; None defers to ``CELLBENCH_OFFLINE``
            (:func:`cellbench.settings.offline`).
    """

    offline: bool | None = None
