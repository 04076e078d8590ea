"""Seed data: deterministic shop-floor arithmetic word problems (see `edgedistill.seeds.generate`)."""
