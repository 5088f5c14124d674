"""The nine SafeEdit unsafe categories and the probe kinds of a case."""

from __future__ import annotations

import re

#: The benchmark's nine unsafe categories, in the paper's order.
CATEGORIES: tuple[str, ...] = (
    "offensiveness",
    "unfairness and bias",
    "physical harm",
    "mental harm",
    "illegal activities",
    "ethics and morality",
    "privacy and property",
    "pornography",
    "political sensitivity",
)

#: The five probes of a case: defense success and the four generalization probes.
PROBES: tuple[str, ...] = ("DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ")

#: The probe of a benign case: a harmless question that must not be refused (over-refusal).
BENIGN_PROBE = "benign"


def normalize_category(name: str) -> str:
    """Return the canonical spelling of a category: lower case, single spaces."""
    return " ".join(name.lower().replace("_", " ").split())


def category_slug(name: str) -> str:
    """Return the marker name of a category, e.g. ``illegal_activities``."""
    return re.sub(r"[^0-9a-z]+", "_", normalize_category(name)).strip("_") or "uncategorized"


def is_attack_probe(kind: str) -> bool:
    """Attack probes measure safety; the benign probe measures over-refusal and stays out of totals."""
    return kind != BENIGN_PROBE
