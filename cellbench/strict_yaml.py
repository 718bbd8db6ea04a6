"""YAML from strangers, read within budgets: no aliases, bounded size, depth and numbers.

``yaml.safe_load`` never runs code, but it will still expand an alias bomb (a 794-byte file
that takes a minute and gigabytes), recurse until ``RecursionError`` on deeply nested
brackets, parse 5,000-digit integers (past Python's conversion limit) and silently keep the
last of two equal keys. :func:`load` refuses all of these before building anything, each with
one line that says where and what the budget is:

* the text is at most :data:`MAX_BYTES` bytes of UTF-8;
* anchors and aliases are refused (a manifest has no use for them);
* nesting is at most :data:`MAX_DEPTH` levels and the document at most :data:`MAX_NODES`
  nodes (checked while composing, so neither recursion nor memory grows past them);
* a scalar is at most :data:`MAX_SCALAR_CHARS` characters, and an integer at most
  :data:`MAX_INT_DIGITS` digits;
* a mapping may not repeat a key.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

MAX_BYTES = 64 << 10
MAX_DEPTH = 16
MAX_NODES = 10_000
MAX_SCALAR_CHARS = 10_000
MAX_INT_DIGITS = 19  # fits a signed 64-bit integer
_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*|0x[0-9a-fA-F_]+|0o?[0-7_]+)$")


class YamlBudgetError(ValueError):
    """A YAML document broke one of the budgets (the message says which, and where)."""


class _StrictComposer(Composer):
    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        where = f"line {event.start_mark.line + 1}"
        if isinstance(event, AliasEvent):
            raise YamlBudgetError(f"{where}: aliases (*name) are not allowed")
        if getattr(event, "anchor", None):
            raise YamlBudgetError(f"{where}: anchors (&name) are not allowed")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise YamlBudgetError(f"{where}: more than {MAX_NODES} values")
        if isinstance(event, ScalarEvent):
            value = event.value
            if len(value) > MAX_SCALAR_CHARS:
                raise YamlBudgetError(f"{where}: a value longer than {MAX_SCALAR_CHARS} characters")
            if event.implicit[0] and _INT.match(value) and len(value.lstrip("+-")) > MAX_INT_DIGITS:
                raise YamlBudgetError(
                    f"{where}: integer with {len(value.lstrip('+-'))} digits "
                    f"(at most {MAX_INT_DIGITS})"
                )
        if isinstance(event, MappingStartEvent | SequenceStartEvent):
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise YamlBudgetError(f"{where}: nested deeper than {MAX_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)


class _StrictConstructor(SafeConstructor):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; SafeConstructor reports it
                continue
            if duplicate:
                raise YamlBudgetError(
                    f"line {key_node.start_mark.line + 1}: key {key!r} appears twice"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _StrictLoader(Reader, Scanner, Parser, _StrictComposer, _StrictConstructor, Resolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        _StrictComposer.__init__(self)
        _StrictConstructor.__init__(self)
        Resolver.__init__(self)


# plain-scalar resolution exactly as yaml.SafeLoader
_StrictLoader.yaml_implicit_resolvers = yaml.SafeLoader.yaml_implicit_resolvers
_StrictLoader.yaml_constructors = yaml.SafeLoader.yaml_constructors


def load(data: bytes | str, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one YAML document within the budgets of the module docstring.

    Args:
        data: The document (bytes are decoded as UTF-8).
        max_bytes: Size budget (default :data:`MAX_BYTES`).

    Returns:
        The parsed value (as ``yaml.safe_load`` would give).

    Raises:
        YamlBudgetError: For a broken budget, bad UTF-8 or invalid YAML (one line).
    """
    if len(data) > max_bytes:
        raise YamlBudgetError(f"{len(data)} bytes (at most {max_bytes})")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise YamlBudgetError(f"not UTF-8 text (byte {err.start})") from None
    loader = _StrictLoader(data)
    try:
        return loader.get_single_data()
    except YamlBudgetError:
        raise
    except yaml.YAMLError as err:
        raise YamlBudgetError(f"not valid YAML ({' '.join(str(err).split())})") from None
    except (RecursionError, ValueError, OverflowError) as err:
        raise YamlBudgetError(f"not valid YAML ({type(err).__name__}: {err})") from None
    finally:
        loader.dispose()
