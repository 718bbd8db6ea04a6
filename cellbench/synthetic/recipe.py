"""Catalog recipe for the synthetic datasets: generate, assign splits, hand over samples.

A synthetic card names this recipe (``recipe: cellbench.synthetic.recipe:build``) and declares

.. code-block:: yaml

    generator: {name: nuclei, params: {n_images: 48, shape: [128, 128]}}
    splits: {method: "...", fractions: {train: 0.5, val: 0.25, test: 0.25},
             group_by: plate, stratify_by: null, seed: 0}

Recipe options passed to ``pull`` (e.g. ``{"n_images": 8}`` in tests) override generator
parameters; the card then no longer describes the built store exactly, so ``pull`` skips the
store checksum for such builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cellbench.errors import CardError
from cellbench.splits import assign_splits
from cellbench.store.sample import Sample
from cellbench.synthetic import generate


def build(ctx: Any) -> Iterator[Sample]:
    """Generate the card's synthetic samples with their splits.

    Args:
        ctx: The :class:`cellbench.registry.RecipeContext`.

    Yields:
        Samples in generation order, with ``split`` set.
    """
    card = ctx.card
    spec = card.extra.get("generator")
    if not isinstance(spec, dict) or "name" not in spec:
        raise CardError(f"dataset {card.ref}: synthetic card needs generator: {{name, params}}")
    params = {**dict(spec.get("params") or {}), **ctx.options}
    if "shape" in params:
        params["shape"] = tuple(params["shape"])
    samples = generate(str(spec["name"]), **params)
    splits = card.splits
    yield from assign_splits(
        samples,
        fractions=dict(splits.get("fractions") or {"train": 0.6, "val": 0.2, "test": 0.2}),
        seed=int(splits.get("seed", 0)),
        group_by=splits.get("group_by"),
        stratify_by=splits.get("stratify_by"),
    )
