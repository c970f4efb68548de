"""Counting helpers that keep the text rules near-linear in the length of a report.

The rules compare mentions pairwise and weigh each conflict by a vote over the *other* mentions of
the same finding (every mention outside the two sentences being compared). Done naively that is a
scan of all mentions per pair, cubic in the report's length (issue 16: 43.6 K characters took 83 s).
A :class:`Tally` counts mention attributes once per report, overall and per sentence, so a vote
"over every mention except those in sentences A and B" is the total minus two per-sentence counts:
the cost of a vote depends on how many *distinct* attribute values the report uses (bounded by the
knowledge base), not on how many mentions it has.

:data:`MAX_PARTNERS` bounds how many counterparts one mention is compared with in a rule: a real
report has a handful of mentions per finding; a pathological one (the same sentence pasted hundreds
of times) would otherwise make the number of flags, and the work, quadratic.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable

from medvlm.checking.evidence import Item

__all__ = ["MAX_PARTNERS", "MAX_SCANNED", "Tally"]

MAX_PARTNERS = 8
"""Counterparts one mention is flagged against per rule (in document order)."""

MAX_SCANNED = 256
"""Candidate counterparts examined per mention and rule before the search stops."""


class Tally:
    """Counts of ``value`` per ``key`` over items, overall and per sentence."""

    def __init__(self) -> None:
        self._total: defaultdict[Hashable, Counter[Hashable]] = defaultdict(Counter)
        self._by_sentence: defaultdict[tuple[Hashable, int], Counter[Hashable]] = defaultdict(
            Counter
        )

    def add(self, key: Hashable, value: Hashable, item: Item) -> None:
        self._total[key][value] += 1
        self._by_sentence[(key, id(item.sentence))][value] += 1

    def count(
        self,
        key: Hashable,
        accept: Callable[[Hashable], bool],
        excluding: Iterable[Item] = (),
    ) -> int:
        """Items under ``key`` whose value ``accept`` takes, outside the sentences of ``excluding``."""
        total = self._total.get(key)
        if not total:
            return 0
        n = sum(c for v, c in total.items() if accept(v))
        for sentence_id in {id(i.sentence) for i in excluding}:
            part = self._by_sentence.get((key, sentence_id))
            if part:
                n -= sum(c for v, c in part.items() if accept(v))
        return n
