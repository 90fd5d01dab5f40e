"""Parsing of kubectl-style label selectors and ``k=v`` label lists given on the command line.

Selector terms are comma-separated: ``gpu=true`` (also ``gpu==true``), ``zone!=b``,
``zone in (a,b)``, ``zone notin (c)``, ``gpu`` (the label exists) and ``!gpu`` (it does not).
Commas inside parentheses belong to the value set. Every function here is pure and raises
``InvalidInput`` with a message that names the offending term.
"""

from __future__ import annotations

import re

from niyanta.errors import InvalidInput
from niyanta.model import LabelSelector, SelectorOp

_KEY = r"[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?"

_SET_TERM = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY_TERM = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})$")
_EXISTS_TERM = re.compile(rf"^(?P<negated>!?)\s*(?P<key>{_KEY})$")
_VALUE_ONLY = re.compile(rf"^{_VALUE}$")
_LABEL_KEY_ONLY = re.compile(rf"^{_KEY}$")

_OPS = {
    "=": SelectorOp.EQ,
    "==": SelectorOp.EQ,
    "!=": SelectorOp.NE,
    "in": SelectorOp.IN,
    "notin": SelectorOp.NOT_IN,
}


def split_terms(text: str) -> list[str]:
    """Split at the commas that are not inside parentheses; raise on unbalanced parentheses."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
            if depth > 1:
                raise InvalidInput(f"invalid selector {text!r}: nested parentheses")
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise InvalidInput(f"invalid selector {text!r}: unbalanced ')'")
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise InvalidInput(f"invalid selector {text!r}: unbalanced '('")
    terms.append("".join(current).strip())
    return terms


def parse_selector(text: str) -> tuple[LabelSelector, ...]:
    """Parse a selector expression into its terms, in the order given."""
    if not text.strip():
        raise InvalidInput("invalid selector: it is empty")
    return tuple(_parse_term(term, text) for term in split_terms(text))


def _parse_term(term: str, whole: str) -> LabelSelector:
    if not term:
        raise InvalidInput(f"invalid selector {whole!r}: empty term")
    if match := _SET_TERM.match(term):
        values = tuple(value.strip() for value in match["values"].split(","))
        if values == ("",):
            raise InvalidInput(f"invalid selector term {term!r}: the value set is empty")
        for value in values:
            if not value or not _VALUE_ONLY.match(value):
                raise InvalidInput(f"invalid selector term {term!r}: bad value {value!r}")
        return LabelSelector(match["key"], _OPS[match["op"]], values)
    if match := _EQUALITY_TERM.match(term):
        return LabelSelector(match["key"], _OPS[match["op"]], (match["value"],))
    if match := _EXISTS_TERM.match(term):
        op = SelectorOp.DOES_NOT_EXIST if match["negated"] else SelectorOp.EXISTS
        return LabelSelector(match["key"], op)
    raise InvalidInput(
        f"invalid selector term {term!r}: expected key=value, key!=value, key in (a,b), "
        "key notin (a,b), key or !key"
    )


def selector_to_json(selectors: tuple[LabelSelector, ...]) -> list[dict[str, object]]:
    """The API's JSON form of selector terms: ``{"key", "op", "values"}``."""
    return [
        {"key": selector.key, "op": selector.op.value, "values": list(selector.values)}
        for selector in selectors
    ]


def parse_labels(text: str) -> dict[str, str]:
    """Parse ``k=v,k=v`` (as given to ``--labels``); an empty string is no labels."""
    labels: dict[str, str] = {}
    for pair in (part.strip() for part in text.split(",")):
        if not pair:
            continue
        labels.update(parse_label(pair))
    return labels


def parse_label(pair: str) -> dict[str, str]:
    """Parse one ``k=v`` label."""
    key, sep, value = pair.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not _LABEL_KEY_ONLY.match(key) or not _VALUE_ONLY.match(value):
        raise InvalidInput(f"invalid label {pair!r}: expected key=value")
    return {key: value}
