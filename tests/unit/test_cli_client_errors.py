"""Rebuilding typed errors from the API's JSON error bodies. The proof against a real coordinator
is in tests/e2e/test_cli_against_dev.py; these are the bodies a healthy coordinator rarely sends."""

from __future__ import annotations

import pytest

from niyanta.client import error_from_response, parse_coordinator_urls
from niyanta.errors import FencedOut, IllegalTransition, InvalidInput, NiyantaError, UnknownTier


def test_a_known_code_becomes_its_class_with_the_server_message() -> None:
    error = error_from_response(404, {"error": {"code": "unknown_tier", "message": "no 'x'"}})
    assert type(error) is UnknownTier
    assert (error.code, error.message, error.http_status) == ("unknown_tier", "no 'x'", 404)


@pytest.mark.parametrize("cls", [FencedOut, IllegalTransition])
def test_classes_with_structured_constructors_are_rebuilt_from_the_message(
    cls: type[NiyantaError],
) -> None:
    error = error_from_response(409, {"error": {"code": cls.code, "message": "refused"}})
    assert type(error) is cls
    assert str(error) == "refused"


def test_an_unknown_code_keeps_its_code_and_status() -> None:
    error = error_from_response(429, {"error": {"code": "rate_limited", "message": "slow down"}})
    assert type(error) is NiyantaError
    assert (error.code, error.message, error.http_status) == ("rate_limited", "slow down", 429)


def test_bodies_that_are_not_niyanta_errors() -> None:
    framework = error_from_response(405, {"detail": "Method Not Allowed"})
    assert (framework.code, framework.message) == ("http_405", "Method Not Allowed")
    proxy = error_from_response(502, "<html>Bad Gateway</html>")
    assert proxy.code == "http_502"
    assert "Bad Gateway" in proxy.message
    # Without a code nothing is guessed from the status alone.
    assert not isinstance(error_from_response(422, None), InvalidInput)


def test_coordinator_url_lists() -> None:
    assert parse_coordinator_urls(" http://a:1/ , https://b:2 ,") == ["http://a:1", "https://b:2"]
    with pytest.raises(ValueError, match="no coordinator"):
        parse_coordinator_urls(" , ")
    with pytest.raises(ValueError, match="http://"):
        parse_coordinator_urls("a:1")
