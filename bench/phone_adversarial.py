"""Time of hostile values through the number readers: linear, never quadratic.

Each shape is read at the stored bound (MAX_STORED_CHARS, the longest value actually parsed) and
at 64 KiB (refused by its length), by ``extract_numbers`` (stored values) and ``parse_number``
(the looked-up number). The reference, measured in the same run: the extension regular
expression the service used before, on runs of spaces (quadratic: twice the spaces, four times the
time; on 64 KiB it took minutes, so it is measured on a few KiB only).

    python -m bench.phone_adversarial

Figures are printed, never asserted.
"""

from __future__ import annotations

import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lookup_core.phone import MAX_STORED_CHARS, InvalidPhoneNumber, extract_numbers, parse_number  # noqa: E402
from tests.test_phone import ADVERSARIAL  # noqa: E402

OLD_EXTENSION = re.compile(r"\s*(?:;\s*ext\s*=|(?:ext|extension|ext\.|x|#)\s*\.?\s*)(\d{1,8})\s*$", re.I)


def best_ms(run, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def refused(text: str) -> None:
    try:
        parse_number(text, "CH")
    except InvalidPhoneNumber:
        pass


def main() -> None:
    print(f"milliseconds, best of 3 (noisy on a shared machine); stored bound {MAX_STORED_CHARS} characters")
    print(f"  {'shape':<22} {'extract @bound':>14} {'extract @64K':>12} {'lookup @64K':>11}")
    worst = 0.0
    for text in ADVERSARIAL:
        bound = text[:MAX_STORED_CHARS]
        figures = (best_ms(lambda b=bound: extract_numbers(b, "CH")), best_ms(lambda t=text: extract_numbers(t, "CH")),
                   best_ms(lambda t=text: refused(t)))
        worst = max(worst, *figures)
        print(f"  {repr(text[:8]) + f'x{len(text)}':<22} {figures[0]:14.3f} {figures[1]:12.3f} {figures[2]:11.3f}")
    plain = best_ms(lambda: [extract_numbers(f"Tel. +41 21 552 {i:02d} 00 (Büro)", "CH") for i in range(100)]) / 100
    print(f"  a labelled number (reference)        {plain:.3f}")
    print(f"  worst of the hostile shapes          {worst:.3f}")
    for size in (1024, 2048, 4096):
        spaces = " " * size
        print(f"  old extension regex, {size:4d} spaces    {best_ms(lambda s=spaces: OLD_EXTENSION.search(s), 1):.1f}")


if __name__ == "__main__":
    main()
