"""The kubectl-style selector and label parsing behind ``submit --affinity`` and ``--labels``."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from niyanta.cli.main import app
from niyanta.cli.selector import parse_labels, parse_selector, selector_to_json, split_terms
from niyanta.errors import InvalidInput
from niyanta.model import LabelSelector, SelectorOp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu=true", LabelSelector("gpu", SelectorOp.EQ, ("true",))),
        ("gpu==true", LabelSelector("gpu", SelectorOp.EQ, ("true",))),
        ("zone!=b", LabelSelector("zone", SelectorOp.NE, ("b",))),
        ("zone in (a,b)", LabelSelector("zone", SelectorOp.IN, ("a", "b"))),
        ("zone in ( a , b )", LabelSelector("zone", SelectorOp.IN, ("a", "b"))),
        ("zone notin (c)", LabelSelector("zone", SelectorOp.NOT_IN, ("c",))),
        ("gpu", LabelSelector("gpu", SelectorOp.EXISTS)),
        ("!gpu", LabelSelector("gpu", SelectorOp.DOES_NOT_EXIST)),
        (
            "example.com/pool=compliance",
            LabelSelector("example.com/pool", SelectorOp.EQ, ("compliance",)),
        ),
        ("tier=", LabelSelector("tier", SelectorOp.EQ, ("",))),
    ],
)
def test_single_terms(text: str, expected: LabelSelector) -> None:
    assert parse_selector(text) == (expected,)


def test_terms_are_split_at_commas_outside_parentheses() -> None:
    assert parse_selector("gpu=true, zone in (a,b),!spot,region notin (eu,us)") == (
        LabelSelector("gpu", SelectorOp.EQ, ("true",)),
        LabelSelector("zone", SelectorOp.IN, ("a", "b")),
        LabelSelector("spot", SelectorOp.DOES_NOT_EXIST),
        LabelSelector("region", SelectorOp.NOT_IN, ("eu", "us")),
    )
    assert split_terms("a in (x,y),b") == ["a in (x,y)", "b"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("gpu=true,", "empty term"),
        (",gpu", "empty term"),
        ("zone in (a,b", "unbalanced '('"),
        ("zone in a,b)", "unbalanced ')'"),
        ("zone in ((a))", "nested"),
        ("zone in ()", "value set is empty"),
        ("zone in (a,,b)", "bad value"),
        ("zone in (a b)", "bad value"),
        ("zone inside (a)", "expected key=value"),
        ("zone=a=b", "expected key=value"),
        ("-zone", "expected key=value"),
        ("zone=a b", "expected key=value"),
        ("zone>3", "expected key=value"),
    ],
)
def test_invalid_selectors_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(reason)):
        parse_selector(text)


def test_parsed_selectors_match_worker_labels_as_kubectl_does() -> None:
    required = parse_selector("gpu=true,zone notin (c),!spot")
    assert all(s.matches({"gpu": "true", "zone": "a"}) for s in required)
    assert not all(s.matches({"gpu": "true", "zone": "c"}) for s in required)
    assert not all(s.matches({"gpu": "true", "spot": "yes"}) for s in required)
    assert not all(s.matches({"zone": "a"}) for s in required)


def test_selector_json_is_the_api_affinity_form() -> None:
    assert selector_to_json(parse_selector("gpu=true,zone in (a,b),ssd")) == [
        {"key": "gpu", "op": "=", "values": ["true"]},
        {"key": "zone", "op": "In", "values": ["a", "b"]},
        {"key": "ssd", "op": "Exists", "values": []},
    ]


def test_labels() -> None:
    assert parse_labels("gpu=true, zone=a,pool=compliance") == {
        "gpu": "true",
        "zone": "a",
        "pool": "compliance",
    }
    assert parse_labels("") == {}
    for bad in ("gpu", "=true", "gpu=a b", "zone=a,=b"):
        with pytest.raises(InvalidInput, match="invalid label"):
            parse_labels(bad)


@pytest.mark.parametrize(
    "args",
    [
        ["--affinity", "zone in (a,b"],
        ["--anti-affinity", "app>=db"],
        ["--label", "novalue"],
        ["--params", "[1, 2]"],
        ["--params", "{not json"],
    ],
)
def test_submit_refuses_bad_input_with_exit_code_2_before_calling_the_api(args: list[str]) -> None:
    # No coordinator listens on port 9: reaching the API would exit 1, not 2.
    result = CliRunner().invoke(
        app, ["--coordinator", "http://127.0.0.1:9", "submit", "t", "--customer", "c", *args]
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output
