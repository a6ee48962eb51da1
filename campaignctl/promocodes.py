"""Promo codes: how a pool's codes look, are made, checked and read from a file.

A generated code is ``PREFIX + BODY + CHECK``: BODY is ``length`` characters
drawn from the pool's alphabet with the operating system's CSPRNG (codes are
unguessable, not numbered), CHECK one more character of the alphabet.

The check character is Damm's algorithm over the alphabet: with the alphabet's
characters numbered 0..N-1 and the quasigroup ``x * y = (2x + y) mod N``,
interim = 0, then ``interim = interim * d`` for every character of BODY + CHECK,
and a code is well formed when it ends at 0. For an odd N that quasigroup is
totally anti-symmetric (2 and 2 - 1 are both invertible mod N), so the check
detects **every single-character error and every transposition of two adjacent
characters** (the check character included). An even-sized alphabet would lose
that promise, so a pool with a check character needs an odd-sized alphabet.
The prefix is the same for every code of a pool and is not checked.

The default alphabet has no look-alikes: no 0/O, 1/I/L; 8 digits and 23
letters, 31 characters (odd, and prime).
"""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DEFAULT_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
DEFAULT_LENGTH = 8
# The code space must be this many times the pool's size: a guessed code (even
# one with the right check character) hits an issued one at most 1 time in 1,000.
SPACE_PER_CODE = 1000


class CodeFileError(ValueError):
    """An import file cannot be read as codes; ``line`` is 1-based, 0 for the whole file."""

    def __init__(self, path: Path, line: int, message: str):
        self.path = path
        self.line = line
        self.reason = message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass(frozen=True)
class CodeFormat:
    """How a generated pool's codes look."""

    alphabet: str = DEFAULT_ALPHABET
    length: int = DEFAULT_LENGTH  # random characters, without prefix and check character
    prefix: str = ""
    check: bool = True  # append a Damm check character

    @property
    def space(self) -> int:
        """How many different codes the format allows."""
        return len(self.alphabet) ** self.length

    def problems(self) -> list[str]:
        """What makes the format unusable, in words a person can act on."""
        found = []
        if len(set(self.alphabet)) != len(self.alphabet):
            repeated = sorted({ch for ch in self.alphabet if self.alphabet.count(ch) > 1})
            found.append(f"the alphabet repeats {', '.join(map(repr, repeated))}: every character must appear once")
        if any(ch.isspace() or ch in ",;\"'" or not ch.isprintable() for ch in self.alphabet):
            found.append("the alphabet may hold no spaces, quotes, commas or semicolons (codes go into CSV files and SMS)")
        if len(self.alphabet) < 2:
            found.append("the alphabet needs at least 2 characters")
        if self.check and len(self.alphabet) % 2 == 0:
            found.append(
                f"the check character needs an alphabet of an odd number of characters (this one has {len(self.alphabet)}): "
                "add or drop one character, or set check: none"
            )
        return found

    def is_well_formed(self, code: str) -> bool:
        """Whether ``code`` has this format: prefix, length, alphabet and check character."""
        if not code.startswith(self.prefix):
            return False
        body = code[len(self.prefix):]
        if len(body) != self.length + (1 if self.check else 0) or any(ch not in self.alphabet for ch in body):
            return False
        return not self.check or damm_interim(body, self.alphabet) == 0


def damm_interim(text: str, alphabet: str) -> int:
    """Damm's interim digit of ``text`` over ``alphabet`` (0 for a well-formed body with its check character)."""
    n = len(alphabet)
    interim = 0
    for ch in text:
        interim = (2 * interim + alphabet.index(ch)) % n
    return interim


def check_character(body: str, alphabet: str) -> str:
    """The character that brings ``body``'s interim to 0."""
    return alphabet[(-2 * damm_interim(body, alphabet)) % len(alphabet)]


def generate_codes(fmt: CodeFormat, count: int) -> list[str]:
    """``count`` random codes of ``fmt`` (distinct among themselves; a caller
    still checks them against codes issued before). Vectorised: about a
    microsecond per code."""
    import numpy as np  # lazily: the CLI imports this module for validation

    if count <= 0:
        return []
    n = len(fmt.alphabet)
    digits = _random_digits(n, count * fmt.length).reshape(count, fmt.length)
    if fmt.check:
        interim = np.zeros(count, dtype=np.int64)
        for column in range(fmt.length):
            interim = (2 * interim + digits[:, column]) % n
        digits = np.concatenate([digits, ((-2 * interim) % n)[:, None]], axis=1)
    table = np.frombuffer(fmt.alphabet.encode("ascii"), dtype=np.uint8) if fmt.alphabet.isascii() else None
    if table is None:  # a non-ASCII alphabet: characters one by one
        codes = [fmt.prefix + "".join(fmt.alphabet[d] for d in row) for row in digits.tolist()]
    else:
        width = digits.shape[1]
        text = table[digits].tobytes()
        prefix = fmt.prefix
        codes = [prefix + text[i:i + width].decode("ascii") for i in range(0, len(text), width)]
    unique = dict.fromkeys(codes)
    while len(unique) < count:  # a collision inside the batch (rare): draw the missing ones
        unique.update(dict.fromkeys(generate_codes(fmt, count - len(unique))))
    return list(unique)[:count]


def _random_digits(n: int, count: int):
    """``count`` uniform integers in [0, n) from the OS CSPRNG, by rejection
    sampling bytes (no modulo bias). n <= 256."""
    import numpy as np

    if n > 256:
        raise ValueError("an alphabet of more than 256 characters")
    limit = 256 - 256 % n
    out = np.empty(0, dtype=np.int64)
    while out.size < count:
        need = count - out.size
        raw = np.frombuffer(secrets.token_bytes(int(need * 256 / limit) + 64), dtype=np.uint8)
        out = np.concatenate([out, (raw[raw < limit] % n).astype(np.int64)])
    return out[:count]


# --------------------------------------------------------------------------- import files


def read_code_file(path: Path, column: str | None = None) -> list[str]:
    """The codes of an import file, in file order.

    A text file holds one code per line; a ``.csv`` file has a header row and
    the codes in ``column`` (default ``code``). Blank lines are skipped and
    spaces around a code stripped; a repeated code, a code with spaces inside
    or an empty CSV cell is an error naming the line (a pool must never hand
    one code to two customers)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CodeFileError(path, 0, "no such file") from None
    except UnicodeDecodeError as exc:
        raise CodeFileError(path, 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CodeFileError(path, 0, exc.strerror or str(exc)) from None
    rows = _csv_codes(path, text, column or "code") if path.suffix.lower() == ".csv" else _text_codes(text)
    codes: list[str] = []
    first_line: dict[str, int] = {}
    for line, code in rows:
        if not code:
            raise CodeFileError(path, line, "empty code")
        if any(ch.isspace() for ch in code):
            raise CodeFileError(path, line, f"code {code!r} has spaces inside")
        if code in first_line:
            raise CodeFileError(path, line, f"code {code!r} repeats line {first_line[code]}")
        first_line[code] = line
        codes.append(code)
    if not codes:
        raise CodeFileError(path, 0, "holds no codes")
    return codes


def _text_codes(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield number, line.strip()


def _csv_codes(path: Path, text: str, column: str) -> Iterator[tuple[int, str]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise CodeFileError(path, 0, "holds no codes")
    names = [name.strip() for name in header]
    if column not in names:
        raise CodeFileError(path, 1, f"no column {column!r} in the header (columns: {', '.join(names)}); set import.column")
    index = names.index(column)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        if index >= len(row):
            raise CodeFileError(path, line, f"the row has no {column!r} cell")
        yield line, row[index].strip()


# --------------------------------------------------------------------------- project checks


def pool_format(pool) -> CodeFormat:
    """The CodeFormat of a generated campaignctl.model.PromoPool."""
    return CodeFormat(pool.alphabet, pool.length, pool.prefix, pool.check)


def check_promo_pools(project) -> list:
    """What the schema cannot say about promo_pools (and the offers drawing
    from them), located at file:line:col: one source per pool, a size for a
    generated pool and a format with room for it, a readable import file, and a
    shared code only from a pool whose codes may be used more than once."""
    from .diagnostics import Diagnostic, display_path
    from .loader import locate

    found = []
    for name, pool in project.promo_pools.items():
        spec = pool.spec
        subject = f"promo_pools.{name}"

        def at(*path, spec=spec, fallback=pool.location):
            return locate(spec, path) or fallback

        if ("generate" in spec) == ("import" in spec):
            found.append(Diagnostic(pool.location, subject, "a pool has either `generate` or `import`, exactly one of them",
                                    "generate codes in a format, or import them from a file"))
            continue
        if pool.source == "import":
            if "size" in spec:
                found.append(Diagnostic(at("size"), subject, "an imported pool's size is the number of codes in its file",
                                        "remove `size`"))
            try:
                read_code_file(pool.file, pool.column)
            except CodeFileError as exc:
                shown = display_path(exc.path, project.root)
                where, message = (at("import", "file"), f"{shown}: {exc.reason}") if exc.line == 0 else (_line_location(shown, exc.line), exc.reason)
                found.append(Diagnostic(where, subject, message, "one code per line; a .csv file has a header row and a `code` column"))
            continue
        fmt = pool_format(pool)
        for problem in fmt.problems():
            found.append(Diagnostic(at("generate", "alphabet") if "alphabet" in spec["generate"] else at("generate"), subject, problem,
                                    "the default alphabet 23456789ABCDEFGHJKMNPQRSTUVWXYZ has 31 characters without look-alikes"))
        if pool.size is None:
            found.append(Diagnostic(at("generate"), subject, "a generated pool needs `size`: how many codes it may hand out",
                                    "e.g. size: 200000; plan fails when campaigns would need more"))
        elif not fmt.problems() and fmt.space < SPACE_PER_CODE * pool.size:
            needed = next(n for n in range(fmt.length, 64) if len(fmt.alphabet) ** n >= SPACE_PER_CODE * pool.size)
            found.append(Diagnostic(
                at("size"), subject,
                f"{len(fmt.alphabet)}^{fmt.length} = {fmt.space:,} possible codes is under {SPACE_PER_CODE:,} x size ({pool.size:,}): "
                "codes would be easy to guess",
                f"set generate.length to at least {needed}, or lower size",
            ))
    found += _check_shared_codes(project)
    return found


def _check_shared_codes(project) -> list:
    from .diagnostics import Diagnostic
    from .loader import locate

    found = []
    for offer in project.offers.values():
        codes = offer.spec.get("promo_codes") or {}
        pool = project.promo_pools.get(codes.get("pool"))
        if pool is not None and codes.get("per_customer") is False and pool.max_uses == 1:
            found.append(Diagnostic(
                locate(offer.spec, ("promo_codes", "per_customer")) or offer.location, f"offers.{offer.name}.promo_codes",
                f"one code shared by every customer (per_customer: false), but pool {pool.name!r} allows each code to be used once",
                f"set max_uses: unlimited (or a number) on promo_pools.{pool.name}, or give a code per customer",
            ))
    return found


def _line_location(shown: str, line: int):
    from .diagnostics import Location

    return Location(shown, line, 1)
