"""Write a CSV of N synthetic contacts with valid Swiss numbers in mixed spellings."""

from __future__ import annotations

import sys


def number(i: int) -> str:
    """The i-th test number: +41 44 2000000 + i (valid Zurich numbers)."""
    return f"+4144{2000000 + i}"


def spelled(i: int) -> str:
    digits = str(2000000 + i)
    forms = (
        f"+41 44 {digits[:3]} {digits[3:5]} {digits[5:]}",
        f"044 {digits[:3]} {digits[3:5]} {digits[5:]}",
        f"0041 44 {digits}",
        f"+41 (0)44 {digits[:3]}.{digits[3:5]}.{digits[5:]}",
    )
    return forms[i % len(forms)]


def write(path: str, count: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("id;first_name;last_name;company;phone_work;email;segment\n")
        for i in range(count):
            handle.write(f"c{i};First{i};Last{i};Company {i % 5000};{spelled(i)};p{i}@example.com;{i % 7}\n")


if __name__ == "__main__":
    write(sys.argv[1], int(sys.argv[2]))
