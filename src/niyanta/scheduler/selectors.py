"""Label selectors as the scheduler uses them: matching label sets and saying them in words."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from niyanta.model import LabelSelector, SelectorOp


def matches_all(selectors: Iterable[LabelSelector], labels: Mapping[str, str]) -> bool:
    return all(selector.matches(labels) for selector in selectors)


def describe(selector: LabelSelector) -> str:
    """The selector as a phrase that completes "no worker ...", e.g. "with gpu=true"."""
    values = ", ".join(selector.values)
    match selector.op:
        case SelectorOp.EXISTS:
            return f"with label {selector.key}"
        case SelectorOp.DOES_NOT_EXIST:
            return f"without label {selector.key}"
        case SelectorOp.IN | SelectorOp.EQ if len(selector.values) == 1:
            return f"with {selector.key}={values}"
        case SelectorOp.IN | SelectorOp.EQ:
            return f"with {selector.key} in ({values})"
        case SelectorOp.NOT_IN | SelectorOp.NE if len(selector.values) == 1:
            return f"with {selector.key}!={values}"
        case _:
            return f"with {selector.key} not in ({values})"


def describe_labels(selector: LabelSelector) -> str:
    """The selector as the labels it matches, e.g. "app=db" or "label app"."""
    return describe(selector).removeprefix("with ")
