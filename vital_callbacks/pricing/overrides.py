"""The ``pricing/`` override files: strict pydantic models, loaded from YAML.

Modelled on genai-prices' own data files: prices are ``Decimal`` per million tokens, field names carry
their unit, unknown keys are errors, and an error names the file. ``vital-callbacks prices --schema``
prints the JSON Schema for editor autocompletion.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from datetime import date, datetime, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

logger = logging.getLogger("vital_callbacks")


class PriceEntry(BaseModel):
    """One price, in force from ``effective_from`` (inclusive, UTC) until the next entry's start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effective_from: date | None = None
    input_mtok: Decimal | None = Field(default=None, ge=0)
    output_mtok: Decimal | None = Field(default=None, ge=0)
    cache_read_mtok: Decimal | None = Field(default=None, ge=0)
    cache_write_mtok: Decimal | None = Field(default=None, ge=0)
    reasoning_mtok: Decimal | None = Field(default=None, ge=0)
    discount: Decimal | None = Field(default=None, ge=0, le=1, description="Fraction off the catalog price.")

    @model_validator(mode="after")
    def _one_kind(self) -> PriceEntry:
        explicit = self.input_mtok is not None or self.output_mtok is not None
        if self.discount is not None and explicit:
            raise ValueError("give either explicit *_mtok prices or a catalog discount, not both")
        if self.discount is None and (self.input_mtok is None or self.output_mtok is None):
            raise ValueError("explicit prices need both input_mtok and output_mtok")
        return self

    def model_price(self) -> Any:
        """These explicit prices as a genai-prices ``ModelPrice``, so they are priced by the same formula
        as the catalog's (built once per entry)."""
        return _model_price(self)

    def describe(self) -> str:
        parts = [f"${self.input_mtok}/input MTok", f"${self.output_mtok}/output MTok"]
        if self.cache_read_mtok is not None:
            parts.append(f"${self.cache_read_mtok}/cache read MTok")
        if self.cache_write_mtok is not None:
            parts.append(f"${self.cache_write_mtok}/cache write MTok")
        if self.reasoning_mtok is not None:
            parts.append(f"${self.reasoning_mtok}/reasoning MTok")
        return ", ".join(parts)


@functools.cache
def _model_price(entry: PriceEntry) -> Any:
    from genai_prices.types import ModelPrice

    return ModelPrice(input_mtok=entry.input_mtok, output_mtok=entry.output_mtok,
                      cache_read_mtok=entry.cache_read_mtok, cache_write_mtok=entry.cache_write_mtok,
                      output_reasoning_mtok=entry.reasoning_mtok)


class OverrideEntry(BaseModel):
    """Prices for one model (and its aliases) from one provider (``*``: any provider)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str
    aliases: list[str] = Field(default_factory=list)
    prices: list[PriceEntry] = Field(min_length=1)
    source_file: str = Field(default="", exclude=True)

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider != "*" and (provider or "").lower() != self.provider.lower():
            return False
        name = model.lower()
        return name == self.model.lower() or name in (a.lower() for a in self.aliases)

    def price_at(self, when: datetime) -> PriceEntry | None:
        day = when.astimezone(timezone.utc).date()
        in_force = [p for p in self.prices if p.effective_from is None or p.effective_from <= day]
        if not in_force:
            return None
        return max(in_force, key=lambda p: p.effective_from or date.min)


class OverrideFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[OverrideEntry] = Field(default_factory=list)


class PricingFileError(ValueError):
    """A ``pricing/`` file that does not parse or validate; the message names the file."""


def shipped_files() -> list[tuple[str, str]]:
    """The override files shipped inside the package (``vital_callbacks/pricing/data``), as
    ``(name, text)``, read through ``importlib.resources`` so a zipped install works too."""
    folder = resources.files("vital_callbacks.pricing") / "data"
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith((".yml", ".yaml")))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in names]


def load_file(path: Path) -> list[OverrideEntry]:
    return _load_text(path.read_text(encoding="utf-8"), str(path), path.name)


def _load_text(text: str, where: str, name: str) -> list[OverrideEntry]:
    try:
        raw = yaml.safe_load(text) or {}
        parsed = OverrideFile.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise PricingFileError(f"{where}: {exc}") from exc
    return [entry.model_copy(update={"source_file": name}) for entry in parsed.models]


def load_overrides(extra_dirs: Iterable[Path] = ()) -> list[OverrideEntry]:
    """User folders first (they win), then the files shipped in the package."""
    entries: list[OverrideEntry] = []
    for folder in (Path(d) for d in extra_dirs):
        for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
            entries.extend(load_file(path))
    for name, text in shipped_files():
        entries.extend(_load_text(text, f"vital_callbacks/pricing/data/{name}", name))
    return entries


def json_schema() -> dict[str, object]:
    return OverrideFile.model_json_schema()
