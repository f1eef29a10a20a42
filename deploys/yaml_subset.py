"""A strict reader of the YAML k3s's ``registries.yaml`` is written in (pure: no YAML library is a dependency).

It reads block mappings and lists, flow lists of scalars (``["a", "b"]``), plain,
single- and double-quoted scalars, and comments: what k3s's documentation and the
usual generators write. Anything else (anchors, aliases, tags, block scalars, flow
mappings with content, a mapping inside a list, several documents) is refused with
the line it is on, never guessed. A plain scalar comes back as ``Plain`` so that the
reader of a field can take ``true`` as YAML 1.1 does (k3s reads the file with yaml.v2):
a boolean where a flag is expected, the text itself where a string is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class YamlError(ValueError):
    """YAML this reader does not take; the message starts with the line."""


class Plain(str):
    """A plain (unquoted) scalar, which YAML may resolve to a boolean or null."""


# yaml.v2 (YAML 1.1) resolves these plain scalars.
TRUE_WORDS = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
FALSE_WORDS = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
NULL_WORDS = {"~", "null", "Null", "NULL"}
REFUSED_STARTS = tuple("&*!|>{}[]%@`,?#")
NOT_TAKEN = "anchors, aliases, tags, block scalars and flow mappings are not read here"


@dataclass(frozen=True)
class Line:
    number: int
    indent: int
    text: str


def read_yaml(text: str) -> Any:
    """The document in ``text`` as dicts, lists and strings (``Plain`` when unquoted); None when it is empty.

    >>> read_yaml('mirrors:\\n  docker.io:\\n    endpoint: ["http://127.0.0.1:5000"]\\n')
    {'mirrors': {'docker.io': {'endpoint': ['http://127.0.0.1:5000']}}}
    """
    lines = significant_lines(text)
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0].indent)
    if end < len(lines):
        raise YamlError(f"line {lines[end].number}: indented unlike the lines before it")
    return value


def significant_lines(text: str) -> list[Line]:
    """The lines that hold something, without comments; a leading ``---`` is skipped."""
    lines: list[Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        body = _without_comment(raw, number).rstrip()
        content = body.lstrip(" ")
        if not content or (not lines and content == "---"):
            continue
        if content.startswith("\t"):
            raise YamlError(f"line {number}: a tab indents it (YAML indents with spaces)")
        if body.startswith(("---", "...", "%")):
            raise YamlError(f"line {number}: {content!r}: one document, without directives, is read here")
        lines.append(Line(number, len(body) - len(content), content))
    return lines


def _without_comment(raw: str, number: int) -> str:
    """``raw`` up to a ``#`` that starts a comment (at the start, or after a space, outside quotes)."""
    quote = ""
    index = 0
    while index < len(raw):
        char = raw[index]
        if quote:
            if (char == "\\" and quote == '"') or (char == quote == "'" and raw[index + 1 : index + 2] == "'"):
                index += 1  # an escape, or '' inside single quotes
            elif char == quote:
                quote = ""
        elif char in "\"'" and (index == 0 or raw[index - 1] in " \t[,{"):
            quote = char
        elif char == "#" and (index == 0 or raw[index - 1] in " \t"):
            return raw[:index]
        index += 1
    if quote:
        raise YamlError(f"line {number}: a quoted string does not end on its line")
    return raw


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _block(lines: list[Line], index: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[index].text):
        return _list(lines, index, indent)
    return _mapping(lines, index, indent)


def _list(lines: list[Line], index: int, indent: int) -> tuple[list[Any], int]:
    items = []
    while index < len(lines) and lines[index].indent == indent and _is_item(lines[index].text):
        line = lines[index]
        rest = line.text[1:].strip()
        if not rest or _split_key(rest, line.number) is not None:
            raise YamlError(f"line {line.number}: only strings are read in a list here")
        items.append(_value(rest, line.number))
        index += 1
    return items, index


def _mapping(lines: list[Line], index: int, indent: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    while index < len(lines) and lines[index].indent == indent:
        line = lines[index]
        split = _split_key(line.text, line.number)
        if split is None:
            raise YamlError(f"line {line.number}: {line.text!r} is not `key: value`")
        key, rest = split
        if key in result:
            raise YamlError(f"line {line.number}: {key!r} appears twice")
        index += 1
        following = lines[index] if index < len(lines) else None
        if rest:
            result[key] = _value(rest, line.number)
        elif following and following.indent > indent:
            result[key], index = _block(lines, index, following.indent)
        elif following and following.indent == indent and _is_item(following.text):
            result[key], index = _list(lines, index, indent)
        else:
            result[key] = None
    return result, index


def _split_key(text: str, number: int) -> tuple[str, str] | None:
    """``(key, rest)`` of a ``key: rest`` line (``rest`` may be empty), None when it is no mapping entry."""
    if text[0] in "\"'":
        end = _quoted_end(text)
        after = text[end:]
        if end < 0 or not (after == ":" or after.startswith(": ")):
            return None
        return _scalar(text[:end], number), after[1:].strip()
    colon = text.find(": ")
    if colon < 0 and text.endswith(":"):
        colon = len(text) - 1
    if colon <= 0:
        return None
    return _scalar(text[:colon].rstrip(), number), text[colon + 1 :].strip()


def _quoted_end(text: str) -> int:
    """The index just after the quoted scalar ``text`` starts with; -1 when it does not end."""
    quote, index = text[0], 1
    while index < len(text):
        if text[index] == "\\" and quote == '"':
            index += 2
            continue
        if text[index] == quote:
            if quote == "'" and text[index + 1 : index + 2] == "'":
                index += 2
                continue
            return index + 1
        index += 1
    return -1


def _value(text: str, number: int) -> Any:
    if text.startswith("["):
        return _flow_list(text, number)
    if text == "{}":
        return {}
    return _scalar(text, number)


def _flow_list(text: str, number: int) -> list[str]:
    if not text.endswith("]"):
        raise YamlError(f"line {number}: a [list] must end on its line")
    items, rest = [], text[1:-1].strip()
    while rest:
        end = _quoted_end(rest) if rest[0] in "\"'" else rest.find(",")
        item = rest if end < 0 else rest[:end]
        items.append(_scalar(item.strip(), number))
        rest = "" if end < 0 else rest[end:].strip()
        if rest and not rest.startswith(","):
            raise YamlError(f"line {number}: {text!r}: items of a [list] are separated by commas")
        rest = rest[1:].strip()
    return items


def _scalar(text: str, number: int) -> str:
    if text[:1] in "\"'":
        if _quoted_end(text) != len(text):
            raise YamlError(f"line {number}: {text!r}: text follows a quoted string")
        if text[0] == "'":
            return text[1:-1].replace("''", "'")
        try:
            return str(json.loads(text))
        except ValueError as error:
            raise YamlError(f"line {number}: {text!r}: an escape this reader does not take") from error
    if not text or text.startswith(REFUSED_STARTS) or _is_item(text) or ": " in text or text.endswith(":"):
        raise YamlError(f"line {number}: {text!r}: {NOT_TAKEN}")
    return Plain(text)
