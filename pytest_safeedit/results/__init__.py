"""Typed results, pass rates, statistics, side effects, the gate applied, summary tables."""
