"""The tier configuration file (``niyanta coordinator --tiers FILE``): TOML or JSON, read by
the standard library, so it needs no dependency.

Both formats hold one table ``tiers`` keyed by tier name, each entry with the fields of
``PUT /v1/tiers/{name}`` (validated by the same schema, so the file and the API accept exactly
the same values)::

    [tiers.platinum]
    priority = 400
    weight = 8
    guaranteed_slots = 4
    guaranteed_cpu = 8          # cores
    guaranteed_memory_mb = 16384
    guarantee_linger_s = 1.0    # seconds its last-used guaranteed capacity stays held
    may_preempt = true
    slo = { queue_wait_p95_s = 2.0, run_time_p95_s = 600, error_rate = 0.01 }

The coordinator upserts these tiers into the store when it starts; tiers the file does not name
keep what the store holds (the defaults, or what the API set).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from niyanta.coordinator.api.schemas import NAME_PATTERN, TierIn
from niyanta.errors import InvalidInput
from niyanta.model import Tier

TIER_NAME = re.compile(NAME_PATTERN)


def load_tier_file(path: str | Path) -> list[Tier]:
    """The tiers the file defines; ``InvalidInput`` naming the file and the field if it is
    unreadable, of an unknown format, or invalid."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"tier file {path}: {exc.strerror or exc}") from None
    return parse_tiers(text, path.suffix.lower(), str(path))


def parse_tiers(text: str, suffix: str, source: str = "tier file") -> list[Tier]:
    """Parse ``text`` as ``.toml`` or ``.json`` (by ``suffix``)."""
    document: Any
    try:
        if suffix == ".toml":
            document = tomllib.loads(text)
        elif suffix == ".json":
            document = json.loads(text)
        else:
            raise InvalidInput(f"{source}: use a .toml or .json file, not {suffix or 'no suffix'}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{source}: not valid {suffix[1:].upper()}: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"tiers"}:
        raise InvalidInput(f"{source}: expected exactly one table, 'tiers'")
    entries = document["tiers"]
    if not isinstance(entries, dict) or not entries:
        raise InvalidInput(f"{source}: 'tiers' must map tier names to their settings")
    tiers = []
    for name, body in entries.items():
        if not TIER_NAME.match(name):
            raise InvalidInput(
                f"{source}: tier name {name!r} may hold only letters, digits, '_', '.' and '-'"
            )
        try:
            tiers.append(TierIn.model_validate(body).to_model(name))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInput(
                f"{source}: tiers.{name}{'.' + where if where else ''}: {first['msg']}"
            ) from None
    return tiers
