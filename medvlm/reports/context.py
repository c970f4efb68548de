"""ConText-style assertion (negation, uncertainty, history) and modifier extraction.

This follows the ConText algorithm (Harkema et al., J Biomed Inform 2009) that medspaCy implements:
trigger cues with a direction open a scope that runs to the sentence end or to a termination cue, and
targets inside the scope take the cue's category. It runs on plain strings with precompiled regexes
because the checker's budget is ~1 ms per report; ``bench/checker.py --compare-medspacy`` measures
agreement and speed against medspaCy's own ConText on the IU reports (see the closing note there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from medvlm.prompts.knowledge import compile_alternation

MAX_BACKWARD_SCOPE = 40
"""Characters between a target and a backward cue ("... has resolved") beyond which it does not apply."""

WEAK_HEDGE = re.compile(r"exclu|rule out|ruled out|r/o|versus|vs|differential|either|consideration")
"""Hedge cues that only leave a finding open ("cannot be excluded", "atelectasis versus early
infiltrate"): not an assertion to set
against a denial (see docs/eval.md, hedge policy)."""

__all__ = [
    "MAX_BACKWARD_SCOPE",
    "WEAK_HEDGE",
    "Cue",
    "CueCategory",
    "Direction",
    "find_cues",
    "find_terminators",
]


class CueCategory(StrEnum):
    NEGATED = "negated"
    POSSIBLE = "possible"
    HISTORICAL = "historical"
    HYPOTHETICAL = "hypothetical"
    PSEUDO = "pseudo"


class Direction(StrEnum):
    FORWARD = "forward"
    BACKWARD = "backward"
    BIDIRECTIONAL = "bidirectional"


@dataclass(frozen=True)
class Cue:
    category: CueCategory
    direction: Direction
    start: int
    end: int
    text: str


_NEG = CueCategory.NEGATED
_POS = CueCategory.POSSIBLE
_HIST = CueCategory.HISTORICAL
_HYP = CueCategory.HYPOTHETICAL
_PSEUDO = CueCategory.PSEUDO
_F = Direction.FORWARD
_B = Direction.BACKWARD
_BI = Direction.BIDIRECTIONAL

# (regex fragment, category, direction). Pseudo cues ("no change") are matched first so that their
# words do not trigger negation.
_CUE_TABLE: tuple[tuple[str, CueCategory, Direction], ...] = (
    (
        r"no (?:significant |interval |appreciable )?(?:change|changes|increase|decrease)",
        _PSEUDO,
        _F,
    ),
    (r"not (?:only|necessarily)", _PSEUDO, _F),
    # "No clear cause for the perihilar opacities": the opacities are not denied (issue 12.2.11)
    (
        r"no (?:clear |definite |obvious |apparent |specific )?(?:cause|source|etiology|"
        r"explanation|reason) (?:for|of)",
        _PSEUDO,
        _F,
    ),
    (
        r"(?:nearly|almost|partially|partly|incompletely|not (?:completely|entirely|fully)) "
        r"(?:resolved|cleared)|near[- ]complete resolution(?: of)?|(?:partial|incomplete) "
        r"resolution(?: of)?",
        _PSEUDO,
        _F,
    ),
    (
        r"not (?:seen|visualized|present|identified|appreciated) (?:on|in) (?:the |any )?"
        r"(?:prior|previous|earlier|older|outside)",
        _PSEUDO,
        _F,
    ),
    (
        r"no (?:longer )?(?:evidence|signs?|findings?) (?:of|to suggest|suggest(?:ive|ing) of)",
        _NEG,
        _F,
    ),
    (r"no radiographic (?:evidence|signs?) of", _NEG, _F),
    (r"no longer (?:seen|present|visualized|identified|evident|apparent)", _NEG, _B),
    (r"no longer", _NEG, _F),
    (r"negative for", _NEG, _F),
    (r"free of", _NEG, _F),
    (r"clear of", _NEG, _F),
    (r"absence of", _NEG, _F),
    (r"(?:interval )?(?:resolution|removal) of", _NEG, _F),
    (
        r"(?:has|have) (?:since |now |completely )?(?:resolved|been removed|cleared)",
        _NEG,
        _B,
    ),
    (r"(?:is|are|was|were) (?:now )?(?:resolved|removed|absent|gone)", _NEG, _B),
    (r"removed|extubated|discontinued", _NEG, _B),
    (r"resolved", _NEG, _BI),
    (
        r"(?:is|are|was|were) not (?:\w+ )?(?:seen|identified|visualized|present|demonstrated|"
        r"appreciated|evident|noted|detected|visible|apparent|enlarged)",
        _NEG,
        _B,
    ),
    (
        r"not (?:definitely |clearly |convincingly )?(?:seen|identified|visualized|"
        r"demonstrated|appreciated|evident|detected)",
        _NEG,
        _B,
    ),
    (r"without", _NEG, _F),
    # Adopted from medspaCy 1.3.1's English ConText rules (resources/en/context_rules.json),
    # which derive from pyConText (Chapman et al.); see docs/eval.md for the comparison.
    (r"lack of|fails? to (?:reveal|demonstrate|show)|unremarkable for|inconsistent with", _NEG, _F),
    (r"rather than", _NEG, _F),
    (
        r"(?:is|are|has been|have been|was|were) (?:ruled out|negative)|unlikely",
        _NEG,
        _B,
    ),
    (r"(?:did not|does not|do not) rule out|(?:is|are) to be ruled out", _POS, _B),
    (r"doubt(?:ful)?|concern(?:ed)? about|worried about", _POS, _F),
    (r"neither|nor", _NEG, _F),
    (
        r"(?:cannot|can not|can't) (?:be )?(?:entirely |completely |totally )?(?:excluded|ruled out)",
        _POS,
        _B,
    ),
    (r"(?:cannot|can not|can't) (?:entirely |completely )?(?:exclude|rule out)", _POS, _F),
    (r"not (?:entirely |completely |totally )?(?:excluded|ruled out)", _POS, _B),
    # An interpretive verb hedges the interpretation after it, not the observation before it
    # ("Marked cardiomegaly, may reflect early edema"; "opacity may represent atelectasis").
    (
        r"(?:may|might|could|can) (?:also )?(?:represent|reflect|indicate|relate|correspond|"
        r"suggest)|(?:which|that) (?:may|might|could) (?:be|represent|reflect)",
        _POS,
        _F,
    ),
    (r"(?:may|might|could) (?:also )?be", _POS, _BI),
    (r"(?:is|are) (?:more )?(?:likely|suspected|questioned|possible|probable)", _POS, _B),
    (
        r"suspicious for|concern(?:ing)? for|suggest(?:s|ed|ive of|ing)?|to suggest|"
        r"compatible with|consistent with|worrisome for|favou?r(?:ed|s|ing)?|"
        r"represent(?:s|ing)?|reflect(?:s|ing)?|likely (?:representing|reflecting|due to)|"
        r"probably (?:representing|reflecting|due to)|in keeping with|attributable to",
        _POS,
        _F,
    ),
    (
        r"possible|possibly|probable|probably|likely|suspect(?:ed)?|suspicious|"
        r"questionable|question of|equivocal|presumed|presumably|"
        r"differential|considerations?|indeterminate|vs\.?|versus|either|"
        r"cannot exclude|could|may|might|apparent",
        _POS,
        _BI,
    ),
    (r"should there|in case of", _HYP, _F),
    (r"no|not", _NEG, _F),
    (
        r"(?:past )?history of|past history|h/o|status post|s/p|post(?:-| )?surgical|"
        r"previous(?:ly)?|prior",
        _HIST,
        _F,
    ),
    (
        r"rule out|r/o|evaluate for|evaluation (?:of|for)|assess(?:ment)? for|to exclude|"
        r"if|whether|screening|check for|question|detect(?:ing|ion)?|to determine|recommend(?:ed)?|"
        r"follow[- ]?up|further evaluation",
        _HYP,
        _F,
    ),
)

_CUE_RE, _CUE_OF = compile_alternation(
    [frag for frag, _, _ in _CUE_TABLE], prefix=r"(?<![\w])", suffix=r"(?![\w])"
)
_TERMINATOR_RE = re.compile(
    r"(?<![\w])(?:but|however|although|though|which|whereas|except|aside from|apart from|"
    r"other than|otherwise|this|these|"
    r"given|(?:as a )?(?:cause|source|origin) (?:for|of))(?![\w])|[;:]|\(|\)",
    re.IGNORECASE,
)


def find_cues(sentence: str) -> list[Cue]:
    """Every cue in a sentence, leftmost-longest, pseudo cues suppressing the words they cover."""
    cues: list[Cue] = []
    for match in _CUE_RE.finditer(sentence):
        _, category, direction = _CUE_TABLE[_CUE_OF[match.lastindex or 0]]
        cues.append(Cue(category, direction, match.start(), match.end(), match.group(0).lower()))
    return cues


def find_terminators(sentence: str) -> list[int]:
    """Start offsets of scope terminators (conjunctions that end a cue's scope)."""
    return [m.start() for m in _TERMINATOR_RE.finditer(sentence)]
