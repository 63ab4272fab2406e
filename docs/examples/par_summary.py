"""One sentence on what PAR did in the search example, from the index itself, so the README's
claim is rewritten with the output it describes (``make docs``) and cannot go stale.

    python docs/examples/par_summary.py INDEX_DIR QUERY_DIR CLASSES_TXT K

A hit is right when the folder it sits in is the query's class (``CLASSES_TXT``: one
``<query file> <class>`` per line)."""

from __future__ import annotations

import sys
from pathlib import Path

from media_retrieval import MediaIndex


def main(index_dir: str, query_dir: str, classes_txt: str, k: str) -> None:
    classes = dict(
        line.split() for line in Path(classes_txt).read_text().splitlines() if line.strip()
    )
    index = MediaIndex.open(index_dir)
    right = wrong = right_kept = wrong_dropped = 0
    for name, label in sorted(classes.items()):
        for hit in index.search(Path(query_dir) / name, k=int(k)):
            if Path(hit.rel_path).parent.name == label:
                right, right_kept = right + 1, right_kept + hit.kept
            else:
                wrong, wrong_dropped = wrong + 1, wrong_dropped + (not hit.kept)
    print(
        f"Of the {len(classes)} queries' top {k}, {right} hits are of the query's class and "
        f"{wrong} of another. "
        f"PAR at δ = {index.par_delta:g} keeps {right_kept} of the {right} right ones and drops "
        f"{wrong_dropped} of the {wrong} wrong ones."
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
