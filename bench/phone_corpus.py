"""Recall and false matches of stored spellings × countries (the corpus of tests/test_phone_corpus.py).

Every spelling is stored as its own contact in a real directory and looked up by the connector's
form (international digits without '+'); a neighbouring number (last digit changed) must find
nothing. Printed for the stored-number reading (``extract_numbers``) and, as the reference in the
same run, for the lookup reading applied to stored values (``parse_number``, as every stored
number was read before ``extract_numbers``).

    python -m bench.phone_corpus [--by-spelling]

Figures are printed, never asserted (the test asserts them).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from crm_backends.contact_store import ContactStore  # noqa: E402
from lookup_core.phone import InvalidPhoneNumber, parse_number  # noqa: E402
from lookup_core.types import Contact, StoredPhone  # noqa: E402
from tests.test_phone_corpus import TENANT_REGION, build_store, corpus, evaluate  # noqa: E402


def lookup_reading(path: str, cases) -> ContactStore:
    """The reference: each stored value read by parse_number, unreadable ones left out."""
    store = ContactStore(path, TENANT_REGION)

    def phones(text: str, region: str) -> list[StoredPhone]:
        try:
            number = parse_number(text, region)
        except InvalidPhoneNumber:
            return []
        return [StoredPhone(number.key, number.extension or "")]

    store.upsert((Contact(id=c.id, name=c.id, phones=[c.text]), phones(c.text, c.region)) for c in cases)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--by-spelling", action="store_true", help="recall of each spelling")
    args = parser.parse_args()
    cases = corpus()
    work = tempfile.mkdtemp(prefix="phone-corpus-")
    try:
        regions = len({c.region for c in cases})
        numbers = len({c.e164 for c in cases})
        spellings = len({c.spelling for c in cases})
        print(f"{len(cases)} stored values: {numbers} example numbers of {regions} regions, {spellings} spellings")
        stores = {
            "extract_numbers (stored reading)": build_store(os.path.join(work, "new.sqlite3"), cases)[0],
            "parse_number (reference: lookup reading)": lookup_reading(os.path.join(work, "old.sqlite3"), cases),
        }
        for label, store in stores.items():
            outcome = evaluate(store, cases)
            print(f"  {label:<42} found {outcome.found}/{outcome.total} ({outcome.found / outcome.total:.1%}),"
                  f" false matches {outcome.false_matches}")
            if args.by_spelling and outcome.missed:
                missed = collections.Counter(i.split("-", 2)[2] for i in outcome.missed)
                for spelling, count in missed.most_common():
                    print(f"      missed {count:3d}  {spelling}")
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
