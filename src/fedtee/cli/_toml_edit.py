"""Append a string to an array in a TOML document by editing its text, keeping comments.

Python's standard library reads TOML (``tomllib``) but cannot write it, and re-serialising
would drop the operator's comments, which in a policy file often say why a value is
trusted. So this module scans the text just far enough to know where each table header and
each key/value sits, inserts the new value, and then proves the edit: the result is parsed
again and must equal the old document with exactly that one value appended. Anything it
cannot place safely (an inline table, say) is refused, never guessed.

The scanner assumes text that ``tomllib`` has already accepted.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from fedtee.errors import PolicyError, Reason

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WS = " \t"


@dataclass(frozen=True)
class _Header:
    path: tuple[str, ...]
    start: int  # offset of the line
    line_end: int  # offset just after the line's newline (or len(text))


@dataclass(frozen=True)
class _KeyValue:
    section: tuple[str, ...]
    key: tuple[str, ...]
    start: int  # offset of the line
    value_start: int
    value_end: int
    line_end: int

    @property
    def path(self) -> tuple[str, ...]:
        return self.section + self.key


@dataclass(frozen=True)
class _Layout:
    headers: tuple[_Header, ...]
    entries: tuple[_KeyValue, ...]


class _Scanner:
    def __init__(self, text: str) -> None:
        self.t = text
        self.n = len(text)

    # --- low level -----------------------------------------------------------------------
    def skip_ws(self, i: int) -> int:
        while i < self.n and self.t[i] in _WS:
            i += 1
        return i

    def skip_ws_nl_comments(self, i: int) -> int:
        while i < self.n:
            c = self.t[i]
            if c in _WS or c in "\r\n":
                i += 1
            elif c == "#":
                i = self.line_end(i)
            else:
                break
        return i

    def line_end(self, i: int) -> int:
        j = self.t.find("\n", i)
        return self.n if j < 0 else j + 1

    def rest_of_line(self, i: int) -> int:
        """Skip trailing whitespace and an optional comment; return the next line's offset."""
        i = self.skip_ws(i)
        if i < self.n and self.t[i] == "#":
            return self.line_end(i)
        if i < self.n and self.t[i] == "\r":
            i += 1
        if i < self.n and self.t[i] == "\n":
            return i + 1
        return i

    def string_end(self, i: int) -> int:
        t = self.t
        for delim, escapes in (('"""', True), ("'''", False)):
            if t.startswith(delim, i):
                j = i + 3
                while True:
                    if escapes and t[j] == "\\":
                        j += 2
                        continue
                    if t.startswith(delim, j):
                        j += 3
                        # Up to two quotes may sit right before the closing delimiter.
                        extra = 0
                        while extra < 2 and j < self.n and t[j] == delim[0]:
                            j += 1
                            extra += 1
                        return j
                    j += 1
        quote = t[i]
        j = i + 1
        while t[j] != quote:
            j += 2 if (quote == '"' and t[j] == "\\") else 1
        return j + 1

    def key_end(self, i: int) -> int:
        """End of a (possibly dotted, possibly quoted) key starting at ``i``."""
        while True:
            i = self.skip_ws(i)
            if self.t[i] in "\"'":
                i = self.string_end(i)
            else:
                m = _BARE_KEY.match(self.t, i)
                assert m is not None
                i = m.end()
            j = self.skip_ws(i)
            if j < self.n and self.t[j] == ".":
                i = j + 1
                continue
            return i

    def value_end(self, i: int) -> int:
        c = self.t[i]
        if c in "\"'":
            return self.string_end(i)
        if c == "[":
            return self.array(i)[1] + 1
        if c == "{":
            j = i + 1
            while True:
                j = self.skip_ws(j)
                if self.t[j] == "}":
                    return j + 1
                j = self.key_end(j)
                j = self.skip_ws(j)
                assert self.t[j] == "="
                j = self.value_end(self.skip_ws(j + 1))
                j = self.skip_ws(j)
                if self.t[j] == ",":
                    j += 1
        j = i
        while j < self.n and self.t[j] not in ",]}#\r\n":
            j += 1
        while j > i and self.t[j - 1] in _WS:
            j -= 1
        return j

    def array(self, i: int) -> tuple[list[tuple[int, int]], int]:
        """Element spans of the array opening at ``i``, and the offset of its ``]``."""
        elements: list[tuple[int, int]] = []
        j = i + 1
        while True:
            j = self.skip_ws_nl_comments(j)
            if self.t[j] == "]":
                return elements, j
            end = self.value_end(j)
            elements.append((j, end))
            j = self.skip_ws_nl_comments(end)
            if self.t[j] == ",":
                j += 1

    # --- the document --------------------------------------------------------------------
    def layout(self) -> _Layout:
        headers: list[_Header] = []
        entries: list[_KeyValue] = []
        section: tuple[str, ...] = ()
        i = 0
        while i < self.n:
            start = i
            i = self.skip_ws(i)
            if i >= self.n:
                break
            c = self.t[i]
            if c in "\r\n" or c == "#":
                i = self.line_end(i)
                continue
            if c == "[":
                is_array = self.t.startswith("[[", i)
                k0 = i + (2 if is_array else 1)
                k1 = self.key_end(k0)
                section = _key_path(self.t[k0:k1])
                close = self.skip_ws(k1)
                close += 2 if is_array else 1
                end = self.rest_of_line(close)
                if not is_array:
                    headers.append(_Header(section, start, end))
                i = end
                continue
            k1 = self.key_end(i)
            key = _key_path(self.t[i:k1])
            eq = self.skip_ws(k1)
            v0 = self.skip_ws(eq + 1)
            v1 = self.value_end(v0)
            end = self.rest_of_line(v1)
            entries.append(_KeyValue(section, key, start, v0, v1, end))
            i = end
        return _Layout(tuple(headers), tuple(entries))


def _key_path(raw: str) -> tuple[str, ...]:
    # Let tomllib decode quoting and escapes: the scanner only finds where keys are.
    doc: Any = tomllib.loads(f"{raw} = 0")
    path: list[str] = []
    while isinstance(doc, dict):
        ((name, doc),) = doc.items()
        path.append(name)
    return tuple(path)


def render_key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _indent_of(text: str, offset: int) -> str:
    line_start = text.rfind("\n", 0, offset) + 1
    j = line_start
    while j < len(text) and text[j] in _WS:
        j += 1
    return text[line_start:j]


def _new_array(value: str, comment: str | None, indent: str) -> str:
    note = f"  # {comment}" if comment else ""
    return f'[\n{indent}  "{value}",{note}\n{indent}]'


def _append_to_array(text: str, entry: _KeyValue, value: str, comment: str | None) -> str:
    s = _Scanner(text)
    elements, close = s.array(entry.value_start)
    note = f"  # {comment}" if comment else ""
    key_indent = _indent_of(text, entry.start)
    multiline = "\n" in text[entry.value_start : close]
    if not multiline and comment:
        # One line cannot hold a per-value comment: lay the array out one value a line.
        inner = key_indent + "  "
        body = "".join(f"{inner}{text[a:b]},\n" for a, b in elements)
        new = f'[\n{body}{inner}"{value}",{note}\n{key_indent}]'
        return text[: entry.value_start] + new + text[close + 1 :]
    if not multiline:
        if not elements:
            return text[:close] + f'"{value}"' + text[close:]
        last_end = elements[-1][1]
        after = s.skip_ws(last_end)
        if text[after] == ",":
            return text[: after + 1] + f' "{value}"' + text[after + 1 :]
        return text[:last_end] + f', "{value}"' + text[last_end:]
    # Multi-line: a new line of its own, indented like the last value.
    if elements:
        indent = _indent_of(text, elements[-1][0])
        last_end = elements[-1][1]
        after = s.skip_ws_nl_comments(last_end)
        if text[after] != ",":
            text = text[:last_end] + "," + text[last_end:]
            s = _Scanner(text)  # offsets after last_end moved by one
            close += 1
            after = last_end
        anchor = after + 1
    else:
        indent = key_indent + "  "
        anchor = entry.value_start + 1
    line_end = s.line_end(anchor) if "\n" in text[anchor:close] else None
    if line_end is not None and line_end <= close:
        return text[:line_end] + f'{indent}"{value}",{note}\n' + text[line_end:]
    return text[:close] + f'\n{indent}"{value}",{note}\n{key_indent}' + text[close:]


def _insert_line(text: str, at: int, line: str) -> str:
    prefix = text[:at]
    if prefix and not prefix.endswith("\n"):
        prefix += "\n"
    return prefix + line + text[at:]


def append_string(
    text: str, table: tuple[str, ...], name: str, value: str, comment: str | None = None
) -> str:
    """Return ``text`` with ``value`` appended to the string array ``table.name``.

    Creates the key, and the table (as a ``[table]`` section), when they do not exist. The
    value is appended only if it is not already there (then ``text`` comes back unchanged).
    Raises :class:`PolicyError` if the document is not valid TOML, if ``table.name`` is
    something other than an array of strings, or if the edit cannot be placed safely.
    """
    try:
        before: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}", reason=Reason.POLICY_INVALID) from exc

    node: Any = before
    for depth, part in enumerate(table, start=1):
        node = node.get(part)
        if node is None:
            break
        if not isinstance(node, dict):
            raise PolicyError(
                f"{'.'.join(table[:depth])} is a {type(node).__name__}, not a table",
                reason=Reason.POLICY_INVALID,
            )
    current = node.get(name) if isinstance(node, dict) else None
    if current is not None and not (
        isinstance(current, list) and all(isinstance(v, str) for v in current)
    ):
        raise PolicyError(
            f"{'.'.join((*table, name))} must be an array of hex strings",
            reason=Reason.POLICY_INVALID,
        )
    if current is not None and value in [v.lower() for v in current]:
        return text

    layout = _Scanner(text).layout()
    target = (*table, name)
    if current is not None:
        entry = next((e for e in layout.entries if e.path == target), None)
        if entry is None or text[entry.value_start] != "[":
            raise _cannot_place(table)
        edited = _append_to_array(text, entry, value, comment)
    elif node is not None:
        edited = _add_key(text, layout, table, name, value, comment)
    else:
        edited = _add_table(text, layout, table, name, value, comment)

    expected = copy.deepcopy(before)
    slot: Any = expected
    for part in table:
        slot = slot.setdefault(part, {})
    slot.setdefault(name, []).append(value)
    try:
        after = tomllib.loads(edited)
    except tomllib.TOMLDecodeError as exc:
        raise _cannot_place(table) from exc
    if after != expected:
        raise _cannot_place(table)
    return edited


def _cannot_place(table: tuple[str, ...]) -> PolicyError:
    dotted = ".".join(table)
    return PolicyError(
        f"cannot add to {dotted} safely by editing the text (is it an inline table?); "
        f"write it as a [{dotted}] section and retry. The file was not changed.",
        reason=Reason.POLICY_INVALID,
    )


def _add_key(
    text: str,
    layout: _Layout,
    table: tuple[str, ...],
    name: str,
    value: str,
    comment: str | None,
) -> str:
    header = next((h for h in layout.headers if h.path == table), None)
    if header is not None:
        inside = [e for e in layout.entries if e.section == table]
        at = inside[-1].line_end if inside else header.line_end
        indent = _indent_of(text, inside[-1].start) if inside else ""
        line = f"{indent}{render_key(name)} = {_new_array(value, comment, indent)}\n"
        return _insert_line(text, at, line)
    # The table exists only through dotted keys (``reference.x = [...]`` inside [tee.sgx]).
    dotted = [e for e in layout.entries if e.path[: len(table)] == table and len(e.key) > 1]
    if not dotted:
        raise _cannot_place(table)
    last = dotted[-1]
    prefix = last.key[: len(table) - len(last.section)]
    key = ".".join(render_key(k) for k in (*prefix, name))
    indent = _indent_of(text, last.start)
    return _insert_line(
        text, last.line_end, f"{indent}{key} = {_new_array(value, comment, indent)}\n"
    )


def _add_table(
    text: str,
    layout: _Layout,
    table: tuple[str, ...],
    name: str,
    value: str,
    comment: str | None,
) -> str:
    # Place the new section after everything belonging to its parent table (e.g. after
    # [tee.sgx] and its sub-tables), so related settings stay together.
    parent = table[:-1]
    related_lines = [h.line_end for h in layout.headers if h.path[: len(parent)] == parent]
    related_lines += [e.line_end for e in layout.entries if e.path[: len(parent)] == parent]
    header = "[" + ".".join(render_key(k) for k in table) + "]"
    section = f"{header}\n{render_key(name)} = {_new_array(value, comment, '')}\n"
    if parent and related_lines:
        return _insert_line(text, max(related_lines), "\n" + section)
    at = len(text)
    lead = "" if not text.strip() else "\n"
    return _insert_line(text, at, lead + section)


__all__ = ["append_string", "render_key"]
