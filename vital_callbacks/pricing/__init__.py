"""Prices: the genai-prices catalog and the YAML overrides, behind one price book."""

from vital_callbacks.pricing.book import PriceBook

__all__ = ["PriceBook"]
