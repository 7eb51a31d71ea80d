"""OCI IAM policy statements and dynamic-group matching rules, parsed for the tests.

    Allow <subject> to <verb> <resource-type> in <location> [where <condition>]

A condition is a tree: `all {...}` / `any {...}` groups (nested, keywords in any case) over leaves
`variable = 'value'` (or `!=`). The tests assert on the tree, never on substrings, so `where any
{...}` in place of `where all {...}` (or a leaf moved out of its group) reads as what it is.
Anything that does not parse raises ValueError: a malformed statement fails the test too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Union

VERBS = ("inspect", "read", "use", "manage")
_STATEMENT = re.compile(
    r"allow\s+(?P<subject>.+?)\s+to\s+(?P<verb>\w+)\s+(?P<resource>[\w-]+)"
    r"\s+in\s+(?P<location>tenancy|compartment\s+id\s+\S+|compartment\s+[^\s]+)"
    r"(?:\s+where\s+(?P<condition>.+))?",
    re.IGNORECASE | re.DOTALL,
)
_TOKEN = re.compile(r"\s*(?:(?P<quoted>'[^']*')|(?P<punct>[{},])|(?P<op>!=|=)|(?P<word>[^\s{},'=!]+))")


@dataclass(frozen=True)
class Leaf:
    variable: str
    operator: str  # "=" or "!="
    value: str


@dataclass(frozen=True)
class Group:
    kind: str  # "all" or "any"
    children: tuple[Condition, ...]

    def leaves(self) -> tuple[Leaf, ...]:
        """The group's direct leaves (not those of nested groups)."""
        return tuple(child for child in self.children if isinstance(child, Leaf))

    def groups(self) -> tuple[Group, ...]:
        return tuple(child for child in self.children if isinstance(child, Group))


Condition = Union[Leaf, Group]


@dataclass(frozen=True)
class Statement:
    subject: str  # e.g. "any-user", "service blockstorage", "dynamic-group id ocid1..."
    verb: str
    resource: str
    location: str  # "tenancy" or "compartment id <ocid>" (or "compartment <name>")
    condition: Condition | None

    @property
    def compartment_id(self) -> str | None:
        parts = self.location.split()
        return parts[2] if parts[:2] == ["compartment", "id"] else None


def parse_statement(text: str) -> Statement:
    match = _STATEMENT.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not an OCI policy statement: {text!r}")
    verb = match["verb"].lower()
    if verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r} in {text!r}")
    parts = match["location"].split()
    if parts[0].lower() == "tenancy":
        location = "tenancy"
    elif parts[1].lower() == "id":
        location = f"compartment id {parts[2]}"
    else:
        location = f"compartment {parts[1]}"
    condition = parse_condition(match["condition"]) if match["condition"] is not None else None
    return Statement(" ".join(match["subject"].split()), verb, match["resource"].lower(), location, condition)


def parse_condition(text: str) -> Condition:
    tokens = _tokens(text)
    condition, position = _condition(tokens, 0, text)
    if position != len(tokens):
        raise ValueError(f"unexpected {tokens[position][1]!r} after the condition in {text!r}")
    return condition


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ValueError(f"cannot read the condition {text!r} at {text[position:]!r}")
        kind = match.lastgroup
        value = match[kind]
        tokens.append((kind, value[1:-1] if kind == "quoted" else value))
        position = match.end()
    return tokens


def _condition(tokens: list[tuple[str, str]], i: int, text: str) -> tuple[Condition, int]:
    def at(j: int) -> tuple[str, str]:
        if j >= len(tokens):
            raise ValueError(f"the condition {text!r} ends too early")
        return tokens[j]

    kind, value = at(i)
    if kind == "word" and value.lower() in ("all", "any") and i + 1 < len(tokens) and tokens[i + 1] == ("punct", "{"):
        children, j = [], i + 2
        while True:
            child, j = _condition(tokens, j, text)
            children.append(child)
            separator = at(j)
            if separator == ("punct", ","):
                j += 1
            elif separator == ("punct", "}"):
                return Group(value.lower(), tuple(children)), j + 1
            else:
                raise ValueError(f"expected ',' or '}}' in {text!r}, got {separator[1]!r}")
    if kind != "word":
        raise ValueError(f"expected a variable in {text!r}, got {value!r}")
    operator = at(i + 1)
    if operator[0] != "op":
        raise ValueError(f"expected = or != after {value!r} in {text!r}")
    operand = at(i + 2)
    if operand[0] not in ("quoted", "word"):
        raise ValueError(f"expected a value after {value} {operator[1]} in {text!r}")
    return Leaf(value, operator[1], operand[1]), i + 3


def walk(condition: Condition | None, depth: int = 0) -> Iterator[tuple[Condition, int]]:
    """Every node of the tree with its depth (0: the condition itself)."""
    if condition is None:
        return
    yield condition, depth
    if isinstance(condition, Group):
        for child in condition.children:
            yield from walk(child, depth + 1)


def all_leaves(condition: Condition | None) -> list[Leaf]:
    return [node for node, _ in walk(condition) if isinstance(node, Leaf)]
