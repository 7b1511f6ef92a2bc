"""One strict YAML loader for every YAML file GreenCert reads.

PyYAML's ``safe_load`` keeps the *last* of two equal keys, so a second
``max_gap:`` further down a manifest silently replaces the first: the
evidence would choose which of its own lines counts. Here a duplicated key is
an error naming the key and both lines. The loader also refuses, with the
line where it can, what would otherwise end in a traceback or a hang later:

- nesting deeper than :data:`MAX_DEPTH` (Python code that walks the data
  recursively would hit the recursion limit; libyaml stops at 1000 levels, the
  pure-Python parser much earlier with a RecursionError);
- aliases that expand to more than :data:`MAX_NODES` nodes ("billion laughs":
  a few lines of anchors that a JSON dump or a validator would expand to
  billions of values) and recursive aliases;
- scalars Python cannot build: a date 2026-13-45, an integer of a million
  digits (beyond Python's integer-string limit).

Only the ``safe`` tag set is accepted, as with ``yaml.safe_load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from greencert.errors import ConfigError, GreenCertError

# Deepest nesting of mappings and sequences accepted (GreenCert's own files nest about 6 deep).
MAX_DEPTH = 64
# Most nodes accepted after expanding aliases (a fleet manifest listing 100,000 devices is ~100k nodes).
MAX_NODES = 2_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _at(mark: Any) -> str:
    return f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "unknown place"


class _StrictMixin:
    """Duplicate keys, depth, alias expansion and scalar construction, checked for both parsers."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()  # type: ignore[attr-defined]
        if node is None:
            return None
        _check_shape(node)
        return self.construct_document(node)  # type: ignore[attr-defined]

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)  # type: ignore[misc]
        except (ValueError, OverflowError, TypeError) as exc:
            raise ConstructorError(
                None, None, f"value {str(node.value)[:40]!r} cannot be read ({exc})", node.start_mark
            ) from None

    def construct_mapping(self, node: Node, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # '<<' merges are expanded (and may be overridden) by PyYAML itself
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        "found an unhashable key",
                        key_node.start_mark,
                    ) from None
                if key in first:
                    raise ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first at {_at(first[key])}); "
                        "a YAML mapping may name each key once",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep)  # type: ignore[misc]


def _check_shape(root: Node) -> None:
    """Depth, recursive aliases and expanded size of the composed node graph, without recursion."""
    sizes: dict[int, int] = {}
    depth_of: dict[int, int] = {}
    on_path: set[int] = set()
    # (node, depth, children-done?) -- iterative post-order over a graph whose shared nodes are aliases.
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if isinstance(node, ScalarNode):
            sizes[key] = 1
            continue
        if depth > MAX_DEPTH:
            raise ConstructorError(
                None,
                None,
                f"exceeded maximum nesting depth of {MAX_DEPTH} levels (not a GreenCert document)",
                node.start_mark,
            )
        children = (
            [c for pair in node.value for c in pair] if isinstance(node, MappingNode) else list(node.value)
        )
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise ConstructorError(
                    None,
                    None,
                    f"expands to more than {MAX_NODES:,} values (aliases repeating aliases?)",
                    node.start_mark,
                )
            continue
        if key in sizes and depth_of.get(key, 0) >= depth:
            continue  # an alias of a node already measured at this depth or deeper
        if key in on_path:
            raise ConstructorError(None, None, "recursive alias (a node contains itself)", node.start_mark)
        on_path.add(key)
        depth_of[key] = depth
        stack.append((node, depth, True))
        for child in children:
            if isinstance(child, MappingNode | SequenceNode) and id(child) in on_path:
                raise ConstructorError(
                    None, None, "recursive alias (a node contains itself)", child.start_mark
                )
            stack.append((child, depth + 1, False))


class StrictLoader(_StrictMixin, yaml.SafeLoader):
    """Pure-Python parser: plainer messages, used when the fast one found a problem."""


_CLoader = getattr(yaml, "CSafeLoader", None)
if _CLoader is not None:

    class FastStrictLoader(_StrictMixin, _CLoader):  # type: ignore[valid-type,misc]
        """libyaml parser with the same checks (manifests of a fleet list thousands of devices)."""

else:  # pragma: no cover - libyaml is part of the locked environment
    FastStrictLoader = StrictLoader  # type: ignore[misc,assignment]


def parse_yaml(text: str, where: str, error: type[GreenCertError] = ConfigError, what: str = "file") -> Any:
    """Parse ``text`` strictly; a problem raises ``error`` naming it and ``where:line:column``."""
    try:
        try:
            return yaml.load(text, Loader=FastStrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as fast_error:
            # Same verdict; the pure-Python parser's messages name the problem more plainly, but it
            # recurses per nesting level: past libyaml's own depth limit, keep libyaml's message.
            try:
                return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
            except RecursionError:
                raise fast_error from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context and "duplicate key" not in problem else problem
        raise error(f"{what} is not valid YAML ({detail})", at) from None
    except RecursionError:
        raise error(f"{what} is nested too deeply to read", where) from None


def load_yaml_file(
    path: Path | str,
    error: type[GreenCertError] = ConfigError,
    what: str = "file",
    max_bytes: int | None = None,
) -> Any:
    """Read and parse a YAML file strictly: missing, unreadable, oversized or non-UTF-8 files raise ``error``."""
    path = Path(path)
    try:
        if max_bytes is not None:
            size = path.stat().st_size
            if size > max_bytes:
                raise error(f"{what} is {size} bytes, over the {max_bytes} byte limit", str(path))
        raw = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{what} is a directory, not a file", str(path)) from None
    except OSError as exc:
        raise error(f"cannot read {what} ({exc.strerror or exc})", str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)) from None
    return parse_yaml(text, str(path), error, what)
