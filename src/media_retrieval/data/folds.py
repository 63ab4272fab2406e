"""Leave-one-source-out folds: train on every source but one, test on that one, whose classes
are then all unseen. The honest test of "does training help on footage from elsewhere?"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from media_retrieval.data.discovery import MediaItem
from media_retrieval.errors import DataError


@dataclass(frozen=True)
class Fold:
    test: str
    train: tuple[str, ...]
    #: test classes also named by a training source ("seen in another domain"); empty normally
    seen_elsewhere: frozenset[str] = frozenset()

    def items(self, sources: Mapping[str, Sequence[MediaItem]], role: str) -> list[MediaItem]:
        """The fold's ``train`` or ``test`` items, in source order."""
        names = self.train if role == "train" else (self.test,)
        return [it for name in names for it in sources[name]]


def leave_one_source_out(
    sources: Mapping[str, Sequence[MediaItem]], allow_shared: bool = False
) -> list[Fold]:
    """One fold per source (sorted by name). A class name found in two sources would make a
    test class *seen*: refused, so every fold's test classes are unseen in its training, unless
    ``allow_shared``: then such a fold records the classes in ``seen_elsewhere`` and the caller
    reports it apart (two sources of one action filmed in different domains)."""
    if len(sources) < 2:
        raise DataError(f"leave-one-source-out needs at least 2 sources, got {len(sources)}")
    classes = {name: {it.label for it in items} for name, items in sources.items()}
    if not allow_shared:
        for a in sources:
            for b in sources:
                shared = classes[a] & classes[b] if a < b else set()
                if shared:
                    raise DataError(
                        f"sources {a!r} and {b!r} share classes {sorted(shared)[:3]}: a test class "
                        "would be seen in training"
                    )
    folds = []
    for name in sorted(sources):
        train = tuple(n for n in sorted(sources) if n != name)
        seen = frozenset(classes[name] & set().union(*(classes[n] for n in train)))
        folds.append(Fold(test=name, train=train, seen_elsewhere=seen))
    return folds
