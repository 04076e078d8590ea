"""Seed data: deterministic shop-floor arithmetic word problems (made by tools/shopfloor_seeds.py)."""
