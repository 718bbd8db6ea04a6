"""SPDX license identifiers of dataset cards, and their spelling on the Hugging Face Hub.

A card's ``license`` is an SPDX license identifier or expression (``CC0-1.0``,
``CC-BY-4.0 AND MIT``, ``LicenseRef-<name>`` for terms SPDX does not list); anything a reader
should know beyond it (who holds the copyright, which part is under which terms) goes in
``license_notes`` beside it. Machine-readable ids let the Hub, Croissant and citation tools tag the
data correctly (CC0 data is ``cc0-1.0``, not ``license: other``).
"""

from __future__ import annotations

import re

#: SPDX identifiers accepted on cards (the ones data and code in this field use).
SPDX_IDS = frozenset(
    {
        "CC0-1.0",
        "CC-BY-2.0",
        "CC-BY-3.0",
        "CC-BY-4.0",
        "CC-BY-SA-3.0",
        "CC-BY-SA-4.0",
        "CC-BY-NC-2.0",
        "CC-BY-NC-3.0",
        "CC-BY-NC-4.0",
        "CC-BY-NC-SA-3.0",
        "CC-BY-ND-4.0",
        "CC-BY-NC-SA-4.0",
        "CC-BY-NC-ND-4.0",
        "PDDL-1.0",
        "ODbL-1.0",
        "ODC-By-1.0",
        "MIT",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "Apache-2.0",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "LGPL-3.0-only",
        "MPL-2.0",
        "Unlicense",
    }
)
_BY_LOWER = {i.lower(): i for i in SPDX_IDS}
#: SPDX ids the Hub spells other than lower-cased.
_HUB_NAMES = {
    "PDDL-1.0": "pddl",
    "ODbL-1.0": "odbl",
    "ODC-By-1.0": "odc-by",
    "GPL-3.0-only": "gpl-3.0",
    "GPL-3.0-or-later": "gpl-3.0",
    "LGPL-3.0-only": "lgpl-3.0",
    "Unlicense": "unlicense",
}
_OPERATOR = re.compile(r"\s+(?:AND|OR|WITH)\s+")
_REF = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")


def spdx_problems(expression: str) -> list[str]:
    """Why ``expression`` is not an SPDX license expression cellbench knows (empty when it is)."""
    text = expression.strip()
    if not text:
        return ["license is empty; give an SPDX identifier such as CC0-1.0"]
    problems = []
    for token in _OPERATOR.split(text.replace("(", " ").replace(")", " ").strip()):
        token = token.strip()
        if token in SPDX_IDS or _REF.fullmatch(token):
            continue
        hint = _BY_LOWER.get(token.lower())
        problems.append(
            f"license {token!r} is not an SPDX identifier"
            + (f" (did you mean {hint}?)" if hint else "")
            + "; put free text in license_notes"
        )
    return problems


def hub_license(expression: str) -> str | None:
    """The Hub's ``license`` value for a single SPDX id, or None (the Hub then says ``other``)."""
    text = expression.strip()
    if text not in SPDX_IDS:
        return None
    return _HUB_NAMES.get(text, text.lower())
