"""Sweep files read as YAML 1.2 (core schema), and plain values YAML 1.1 read otherwise refused.

PyYAML follows YAML 1.1: ``no``/``yes``/``on``/``off`` are booleans, ``12:30`` is 750 (base 60),
``0755`` is 493 (octal), ``1_000`` is 1000, while ``1e-3`` is text. YAML 1.2 (2009; what most
tools and people expect now) makes only ``true``/``false`` booleans and reads the others as text
(or ``0755`` as 755). A grid ``strategy: [no, yes]`` so became ``[False, True]``.

Earlier vlm_lab read sweep files as YAML 1.1 (plus numbers with an exponent), and run ids
hash the values as read: reading such a value the YAML 1.2 way would silently change the ids
of runs already made (a resume would start them all again) and hand the notebook another
value. So a plain (unquoted) value that the two read differently is refused, each one named
with its line and both spellings: the quoted text, or the value as read before (which keeps
earlier runs' ids). Every other value reads as it did, so no existing run id changes.
Dates (``2024-01-01``) are the one exception: read as text, as YAML 1.2 does; YAML 1.1's
date was no value a notebook parameter could take, and a run id hashes the same text.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from vlm_lab.errors import SweepError

# YAML 1.2.2, 10.3.2 "Tag Resolution" of the core schema.
_CORE = {
    "null": re.compile(r"^(?:~|null|Null|NULL|)$"),
    "bool": re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    "int": re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    "float": re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
}
_FIRST = {"null": ["~", "n", "N", ""], "bool": list("tTfF"), "int": list("-+0123456789"), "float": list("-+0123456789.")}

# What earlier vlm_lab added to YAML 1.1: floats with an exponent and no dot (``1e-3``) as numbers.
_EXPONENT_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Yaml11Loader(yaml.SafeLoader):
    """How earlier vlm_lab read a plain value: YAML 1.1, plus ``1e-3`` as a number."""


_Yaml11Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Yaml11Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def read_plain(text: str) -> Any:
    """``text`` read as an unquoted YAML 1.2 (core schema) value: ``'8'`` -> 8, ``'yes'`` -> ``'yes'``."""
    return _construct(SweepLoader, text)


def _read_as_yaml11(text: str) -> Any:
    return _construct(_Yaml11Loader, text)


def _construct(loader_class: type, text: str) -> Any:
    loader = loader_class("")
    try:
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))
        return loader.construct_object(yaml.ScalarNode(tag, text))
    finally:
        loader.dispose()


def spell(value: Any) -> str:
    """``value`` as a YAML 1.2 plain scalar reads it back: ``true``, ``750``, ``.inf``, ``null``;
    text in single quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


_MERGE = "tag:yaml.org,2002:merge"
_KIND = {bool: "the boolean", int: "the number", float: "the number", type(None): "null", str: "the text"}


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


class SweepLoader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 core-schema scalars that refuses a key given twice (PyYAML keeps
    the last one silently) and plain values YAML 1.1 read otherwise (module docstring).
    ``path`` names the file in errors."""

    path: Path = Path("<sweep file>")

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._plain: list[yaml.ScalarNode] = []

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        event = self.peek_event()
        node = super().compose_scalar_node(anchor)
        if event.tag in (None, "!") and event.style is None:  # plain, its tag implicit: YAML 1.1 and 1.2 may differ
            self._plain.append(node)
        return node

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._refuse_two_way_values()
        return self.construct_document(node)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = self.construct_scalar(node)
        if value.startswith("0o"):
            return int(value[2:], 8)
        return int(value, 16) if value.startswith("0x") else int(value, 10)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *defaults`: its keys may be overridden here (flatten_mapping)
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if key in seen:
                raise SweepError(f"{self.path}: key {key!r} appears twice (line {seen[key]} and line {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def _refuse_two_way_values(self) -> None:
        """Raise, naming every plain value that YAML 1.1 (as earlier vlm_lab read it) and 1.2 read differently."""
        problems = []
        for node in self._plain:
            if node.tag == _MERGE:
                continue
            now = self.construct_object(node)
            try:
                before = _read_as_yaml11(node.value)
            except (ValueError, yaml.YAMLError):  # e.g. 2024-13-45: no YAML 1.1 value it could have had
                continue
            if _same(before, now) or type(before).__name__ in ("date", "datetime"):
                continue
            readings = [(before, ", as read before"), (now, "")]
            if not any(isinstance(value, str) for value, _ in readings):  # 0755: 493 or 755, or the text
                readings.append((node.value, ""))
            readings.sort(key=lambda reading: not isinstance(reading[0], str))  # the text first
            spellings = " or ".join(f"{spell(v)} ({_KIND.get(type(v), type(v).__name__)}{why})" for v, why in readings)
            mark = node.start_mark
            problems.append(
                f"line {mark.line + 1}, column {mark.column + 1}: {node.value} -> write {spellings}"
            )
        if not problems:
            return
        head = f"{self.path}: {'this value is' if len(problems) == 1 else f'{len(problems)} values are'} read differently by YAML 1.1"
        raise SweepError(
            f"{head} (how vlm_lab read sweep files before) and YAML 1.2; write what you mean (the spelling 'as read "
            "before' keeps the run ids of runs made then):\n  " + "\n  ".join(problems)
        )


SweepLoader.yaml_implicit_resolvers = {}
for _tag, _regexp in _CORE.items():
    SweepLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", _regexp, _FIRST[_tag])
SweepLoader.add_implicit_resolver(_MERGE, re.compile(r"^(?:<<)$"), ["<"])
SweepLoader.add_constructor("tag:yaml.org,2002:int", SweepLoader.construct_yaml_int)  # 012 is 12, not octal


def load_yaml(text: str, path: Path) -> Any:
    """``text`` (the sweep file at ``path``) read by ``SweepLoader``.

    Raises:
        SweepError: a key given twice, or plain values YAML 1.1 and 1.2 read differently.
        yaml.YAMLError: not YAML.
    """
    loader_class = type("SweepLoader", (SweepLoader,), {"path": path})
    return yaml.load(text, Loader=loader_class)
