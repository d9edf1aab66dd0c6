"""YAML text to plain Python data that remembers where each value was written.

``yaml.safe_load`` semantics (YAML 1.1 scalars, no arbitrary objects), but
mappings and sequences carry line numbers so every problem can point at a
line, and integers keep the text they were written as: ``extension: 0123`` is
the octal number 83 in YAML 1.1, and only the text tells us the person meant
"0123".  Duplicate keys, which YAML silently resolves as "last one wins", are
recorded so the validator can report them.
"""
from __future__ import annotations

import yaml

from .errors import ConfigError, Problem

#: The YAML path of problems about a document as a whole.
DOCUMENT = "(document)"

_MERGE_TAG = "tag:yaml.org,2002:merge"
_HINTS = (  # (words of PyYAML's message, what the person probably has to do)
    ("scanning an alias", " (an unquoted * starts an alias: quote IVR keys like \"*\")"),
    ("mapping values are not allowed", " (quote text that contains ': ')"),
)


class YamlMap(dict):
    """A mapping with its 1-based ``line``, ``key_lines`` {key: line} and
    ``duplicate_keys`` [(key, line)] for keys written more than once."""

    line: int
    key_lines: dict
    duplicate_keys: list


class YamlSeq(list):
    """A sequence with its 1-based ``line`` and ``item_lines`` (one per item)."""

    line: int
    item_lines: list


class YamlInt(int):
    """An int that remembers its source ``text`` (e.g. ``"0123"`` for 83)."""

    text: str


#: libyaml's parser when PyYAML was built with it (about 10x faster on a large
#: company); both give the same nodes and marks, and the same safe constructor.
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineLoader(_SafeBase):
    """``SafeLoader`` producing :class:`YamlMap`, :class:`YamlSeq` and :class:`YamlInt`."""

    def construct_object(self, node, deep=False):
        # PyYAML lets plain exceptions escape for explicit tags like `!!int abc`.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {str(node.value)[:60]!r} as {node.tag}: {exc}",
                node.start_mark) from None


def _construct_map(loader: LineLoader, node: yaml.MappingNode):
    """Like SafeConstructor's, plus lines and duplicate keys (a generator, for recursion)."""
    data = YamlMap()
    data.line = node.start_mark.line + 1
    data.key_lines = {}
    data.duplicate_keys = []
    yield data
    own_keys = [key for key, _ in node.value if key.tag != _MERGE_TAG]
    loader.flatten_mapping(node)  # merged ("<<") keys come first, own keys override
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "found a list or mapping used as a key", key_node.start_mark) from None
        data[key] = loader.construct_object(value_node)
        data.key_lines[key] = key_node.start_mark.line + 1
    seen = set()
    for key_node in own_keys:
        key = loader.construct_object(key_node)  # already built: cached by node
        if key in seen:
            data.duplicate_keys.append((key, key_node.start_mark.line + 1))
        seen.add(key)


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode):
    data = YamlSeq()
    data.line = node.start_mark.line + 1
    data.item_lines = [item.start_mark.line + 1 for item in node.value]
    yield data
    data.extend(loader.construct_object(item) for item in node.value)


def _construct_int(loader: LineLoader, node: yaml.ScalarNode) -> YamlInt:
    value = YamlInt(loader.construct_yaml_int(node))
    value.text = node.value
    return value


def _construct_timestamp(loader: LineLoader, node: yaml.ScalarNode) -> object:
    """A date; an impossible one like 2026-02-30 stays text for the validator to report."""
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError:
        return node.value


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
LineLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
LineLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def load_yaml(text: str, source: str) -> object:
    """Parse one YAML document; a syntax error becomes a one-problem :class:`ConfigError`."""
    try:
        loader = LineLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        what += next((hint for clue, hint in _HINTS if clue in what), "")
        problem = Problem(DOCUMENT, f"invalid YAML: {what}",
                          mark.line + 1 if mark else None, source)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problem = Problem(DOCUMENT, f"invalid YAML: {exc.reason} "
                          f"(character #x{exc.character:04x})", line, source)
    except RecursionError:
        problem = Problem(DOCUMENT, "invalid YAML: nested too deeply", None, source)
    raise ConfigError([problem])
