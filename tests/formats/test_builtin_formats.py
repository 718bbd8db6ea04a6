"""Every built-in format imports, is named as registered and declares what it can do."""

from __future__ import annotations

from cellbench.formats.registry import BUILTIN, format_names, get_format
from cellbench.tasks import task_names


def test_every_builtin_format_loads_with_its_own_name() -> None:
    assert {"bbbc-labels", "cellpose", "dsb", "image-folder", "ome-tiff", "ome-zarr"} <= set(
        format_names()
    )
    assert {"stardist", "tissuenet"} <= set(format_names())
    for name in BUILTIN:
        fmt = get_format(name)
        assert fmt.name == name
        assert fmt.read is not None or fmt.write is not None
        assert fmt.validate is not None, name
        assert set(fmt.tasks) <= set(task_names()), name
        assert fmt.description and all(fmt.options.values())


def test_kept_per_process_recomputes_only_when_a_watched_path_changes(tmp_path) -> None:
    import os

    from cellbench.formats.registry import kept_per_process

    f = tmp_path / "index.json"
    f.write_text("a")
    calls: list[int] = []
    table: dict = {}

    def compute() -> int:
        calls.append(1)
        return len(calls)

    watched = [f, tmp_path / "absent"]
    assert kept_per_process(table, "k", watched, compute) == 1
    assert kept_per_process(table, "k", watched, compute) == 1  # kept
    os.utime(f, ns=(1, 1))
    assert kept_per_process(table, "k", watched, compute) == 2  # changed: computed again
    assert kept_per_process(table, "other", watched, compute) == 3
    assert list(table) == ["other"]  # size 1: the older listing was dropped
