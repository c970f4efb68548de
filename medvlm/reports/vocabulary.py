"""Qualifier words: the one list the mention extractor finds and the checker's rules read.

A word a rule looks for in ``Mention.qualifiers`` is found only if the extractor knows it, so both
take their words from here (``QUALIFIERS`` is what ``medvlm.reports.mentions`` extracts). The
knowledge base's ``acute_when`` and ``qualifier:`` conditions must use these words too (tested).
"""

from __future__ import annotations

__all__ = [
    "CHRONIC",
    "OTHERWISE",
    "PLACEHOLDERS",
    "QUALIFIERS",
    "WEAK_BROAD_DENIAL",
    "WEAK_DENIAL",
]

PLACEHOLDERS = frozenset({"xxxx", "___"})
"""Redaction placeholders (IU ``XXXX``, MIMIC ``___``): the hidden word may be "large" or "new"."""

WEAK_DENIAL = frozenset(
    {
        "new",
        "bony",
        "bone",
        "osseous",
        "lytic",
        "blastic",
        "destructive",
        "skin",
        "cutaneous",
        "soft tissue",
        "acute",
        "displaced",
        "other",
        "additional",
        "further",
        *PLACEHOLDERS,
        "rib",
        "ribs",
        "clavicle",
        "clavicular",
        "humerus",
        "humeral",
        "spine",
        "spinal",
        "vertebral",
        "hip",
        "pelvic",
        "pelvis",
        "scapula",
        "scapular",
        "sternum",
        "sternal",
        "shoulder",
        "wrist",
        "hand",
        "large",
        "significant",
        "sizable",
        "gross",
        "substantial",
    }
)
"""A denial with one of these words leaves room for the asserted finding ("no new consolidation",
"no displaced rib fracture", "no other nodules", "no XXXX opacity"), unless the assertion has it too."""

WEAK_BROAD_DENIAL = frozenset(
    {
        "focal",
        "dense",
        "confluent",
        "lobar",
        "segmental",
        "discrete",
        "visible",
        "obvious",
        "appreciable",
        "overt",
        "frank",
        "convincing",
        "suspicious",
        "typical",
        "definite",
        "definitive",
        "free",
    }
)
"""A broader denial ("no focal airspace disease") with one of these words does not deny a narrower
finding described differently ("patchy consolidation" is not "focal airspace disease")."""

CHRONIC = frozenset(
    {
        "chronic",
        "old",
        "healed",
        "healing",
        "remote",
        "stable",
        "unchanged",
        "persistent",
        "residual",
    }
)
"""A finding with one of these words is not new (no "new finding not in the impression" flag)."""

OTHERWISE = "otherwise"
"""Scopes a denial to the rest of the film ("otherwise no consolidation")."""

QUALIFIERS = WEAK_DENIAL | WEAK_BROAD_DENIAL | CHRONIC | {OTHERWISE}
"""Every qualifier the mention extractor finds before a term."""
