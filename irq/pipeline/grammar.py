r"""The pipeline-string grammar: parsing to a syntax tree, and formatting values so they parse back.

    pipeline := element ("," element)*
    element  := GROUP "(" pipeline ")"            GROUP: "pipeline" or "fixpoint"
              | NAME ("{" option ("," option)* "}")?
    option   := KEY "=" value
    value    := scalar | "[" (scalar ("," scalar)*)? "]"
    scalar   := '"' text with \" and \\ escapes '"' | bare text without , { } [ ] ( ) "

``fixpoint(fold-constants,cleanup)`` repeats its passes until none changes the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from irq.errors import PipelineError

GROUPS = ("pipeline", "fixpoint")
_SPECIAL = set(',{}[]()"')
_BARE = re.compile(r'[^,{}\[\]()"\s](?:[^,{}\[\]()"]*[^,{}\[\]()"\s])?')


class Quoted(str):
    """A value written in quotes: always the string itself (``"none"`` is not None)."""

    __slots__ = ()


@dataclass
class Element:
    """One pass with its options (values are strings or lists of strings), or a group of elements."""

    name: str
    options: dict[str, str | list[str]] = field(default_factory=dict)
    children: list[Element] | None = None  # set for a group


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> PipelineError:
        return PipelineError(f"pipeline {self.text!r}, at character {self.pos + 1}: {what}")

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected {ch!r}, found {found}")
        self.pos += 1

    def word(self, what: str) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _SPECIAL | {"="} \
                and not self.text[self.pos].isspace():
            self.pos += 1
        if start == self.pos:
            raise self.fail(f"expected {what}")
        return self.text[start:self.pos]

    def pipeline(self, closing: str = "") -> list[Element]:
        elements: list[Element] = []
        while True:
            if self.peek() in ("", closing) and not elements:
                break
            elements.append(self.element())
            if self.peek() != ",":
                break
            self.pos += 1
        return elements

    def element(self) -> Element:
        name = self.word("a pass name")
        if self.peek() == "(":
            if name not in GROUPS:
                raise self.fail(f"{name!r} is not a group (groups: {', '.join(GROUPS)})")
            self.pos += 1
            children = self.pipeline(")")
            self.expect(")")
            return Element(name, children=children)
        options: dict[str, str | list[str]] = {}
        if self.peek() == "{":
            self.pos += 1
            while self.peek() != "}":
                key = self.word("an option name")
                if self.peek() != "=":
                    raise self.fail(f"option {key!r} of pass {name!r} needs the form key=value")
                self.pos += 1
                options[key] = self.value()
                if self.peek() == ",":
                    self.pos += 1
                elif self.peek() != "}":
                    raise self.fail(f"pass {name!r}: expected ',' or '}}' after option {key!r} (unbalanced braces?)")
            self.pos += 1
        return Element(name, options)

    def value(self) -> str | list[str]:
        if self.peek() != "[":
            return self.scalar()
        self.pos += 1
        items: list[str] = []
        while self.peek() != "]":
            if not self.peek():
                raise self.fail("unbalanced '['")
            items.append(self.scalar())
            if self.peek() == ",":
                self.pos += 1
        self.pos += 1
        return items

    def scalar(self) -> str:
        if self.peek() == '"':
            self.pos += 1
            out = []
            while self.pos < len(self.text) and self.text[self.pos] != '"':
                if self.text[self.pos] == "\\" and self.pos + 1 < len(self.text):
                    self.pos += 1
                out.append(self.text[self.pos])
                self.pos += 1
            if self.pos >= len(self.text):
                raise self.fail("unterminated quoted string")
            self.pos += 1
            return Quoted("".join(out))
        self.skip_space()
        match = _BARE.match(self.text, self.pos)
        if not match:
            return ""
        self.pos = match.end()
        return match.group(0)


def parse(text: str) -> list[Element]:
    """The syntax tree of a pipeline string; PipelineError says where it goes wrong."""
    parser = _Parser(text)
    elements = parser.pipeline()
    if parser.peek():
        if parser.peek() == "}":
            raise parser.fail("unbalanced '}'")
        raise parser.fail(f"unexpected {parser.peek()!r}")
    return elements


def format_scalar(value: object) -> str:
    """One option value as the grammar spells it (quoted where bare text would not parse back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() != "none":
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_value(value: object) -> str:
    """A value, a tuple as ``[a,b]``."""
    if isinstance(value, tuple | list):
        return "[" + ",".join(format_scalar(v) for v in value) + "]"
    return format_scalar(value)
