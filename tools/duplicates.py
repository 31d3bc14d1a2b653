"""Repeated code and oversized functions and files in src/ — the numbers issue 19 measures.

`make duplicates` runs this. Three reports, each with its count:

- **Repeated code**: pairs of places that share `--min-lines` (6) or more consecutive lines
  and `--min-tokens` (40) tokens (so six lines of closing brackets do not count). Lines are
  compared as token sequences, so formatting never matters; comments, docstrings, import
  statements and `def` signatures are left out (a Protocol's signature repeated by its
  implementations is not repetition). Two places in one file count too; the shifted windows of
  one repeated stretch are merged into one pair. Counted twice: exactly, and with identifiers
  and literals erased (code copied and renamed; this count also sees declarations of the same
  shape, such as table columns, which is why both are printed).
- **Functions over `--function-limit` (80) lines**, decorators and docstring included.
- **Files over `--file-limit` (400) lines**, module-level text constants (SQL) not counted.

Alembic migrations (any `migrations` directory) are left out of all three. The standard library
only: pylint's duplicate-code check (R0801) does not compare a file with itself and so misses
most of what this finds.
"""

from __future__ import annotations

import argparse
import ast
import io
import keyword
import tokenize
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SKIPPED_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
    tokenize.ENCODING,
}
Line = tuple[int, tuple[str, ...]]
DEFS = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class Pair:
    """Two places sharing lines: (file, first row, last row) each, and the shared token count."""

    first: tuple[str, int, int]
    second: tuple[str, int, int]
    tokens: int

    def __str__(self) -> str:
        (a, a0, a1), (b, b0, b1) = self.first, self.second
        return f"{a}:{a0}-{a1}  {b}:{b0}-{b1}  ({a1 - a0 + 1} lines, {self.tokens} tokens)"


def python_files(roots: Iterable[Path]) -> list[Path]:
    """Every .py file under the roots, migrations left out, in a stable order."""
    found: list[Path] = []
    for root in roots:
        paths = [root] if root.is_file() else root.rglob("*.py")
        found.extend(p for p in paths if "migrations" not in p.parts)
    return sorted(found)


def _docstring(node: ast.AST) -> ast.Expr | None:
    if not isinstance(node, ast.Module | ast.ClassDef | DEFS):
        return None
    body = node.body
    if not body or not isinstance(body[0], ast.Expr):
        return None
    value = body[0].value
    return body[0] if isinstance(value, ast.Constant) and isinstance(value.value, str) else None


def skipped_rows(tree: ast.Module) -> set[int]:
    """Rows that never count as repeated code: imports, docstrings and `def` signatures."""
    rows: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            rows.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, DEFS):
            rows.update(range(node.lineno, node.body[0].lineno))
        doc = _docstring(node)
        if doc is not None:
            rows.update(range(doc.lineno, (doc.end_lineno or doc.lineno) + 1))
    return rows


def _spelling(token: tokenize.TokenInfo, renamed: bool) -> str:
    if not renamed:
        return token.string
    if token.type == tokenize.NAME and not keyword.iskeyword(token.string):
        return "N"
    if token.type == tokenize.STRING:
        return "S"
    return "0" if token.type == tokenize.NUMBER else token.string


def code_lines(source: str, renamed: bool) -> list[Line]:
    """The file's code as (row, tokens) per source row, skipped rows and empty rows left out."""
    skip = skipped_rows(ast.parse(source))
    rows: dict[int, list[str]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        row = token.start[0]
        if token.type in SKIPPED_TOKENS or row in skip:
            continue
        rows.setdefault(row, []).append(_spelling(token, renamed))
    return [(row, tuple(tokens)) for row, tokens in rows.items()]


def _matching_windows(lines: dict[str, list[Line]], size: int) -> set[tuple[str, int, str, int]]:
    """(file a, index a, file b, index b) for every two equal windows of `size` lines.

    A window made of fewer than `size / 2` different lines is a table (`"name": value,` entry
    after entry once names are erased), not code, and is not compared."""
    seen: dict[tuple[tuple[str, ...], ...], list[tuple[str, int]]] = defaultdict(list)
    for name, rows in lines.items():
        for i in range(len(rows) - size + 1):
            window = tuple(tokens for _, tokens in rows[i : i + size])
            if 2 * len(set(window)) >= size:
                seen[window].append((name, i))
    matches: set[tuple[str, int, str, int]] = set()
    for places in seen.values():
        for k, (a, i) in enumerate(places):
            for b, j in places[k + 1 :]:
                if a != b or j - i >= size:
                    matches.add((a, i, b, j))
    return matches


@dataclass
class Run:
    """A stretch of equal lines: indices into each file's code lines, last index included."""

    a: str
    a_first: int
    a_last: int
    b: str
    b_first: int
    b_last: int

    def overlaps(self, other: Run) -> bool:
        """Both sides overlap: the same stretch found again at a shifted window."""
        return (
            (self.a, self.b) == (other.a, other.b)
            and self.a_first <= other.a_last
            and other.a_first <= self.a_last
            and self.b_first <= other.b_last
            and other.b_first <= self.b_last
        )

    def absorb(self, other: Run) -> None:
        self.a_first, self.a_last = min(self.a_first, other.a_first), max(self.a_last, other.a_last)
        self.b_first, self.b_last = min(self.b_first, other.b_first), max(self.b_last, other.b_last)


def runs(matches: set[tuple[str, int, str, int]], size: int) -> list[Run]:
    """Maximal diagonals of matching windows, shifted copies of one stretch merged."""
    found: list[Run] = []
    for a, i, b, j in sorted(matches):
        if (a, i - 1, b, j - 1) in matches:
            continue
        n = 1
        while (a, i + n, b, j + n) in matches:
            n += 1
        run = Run(a, i, i + n + size - 2, b, j, j + n + size - 2)
        twin = next((r for r in found if r.overlaps(run)), None)
        if twin is None:
            found.append(run)
        else:
            twin.absorb(run)
    return found


def repeated(files: list[Path], min_lines: int, min_tokens: int, renamed: bool) -> list[Pair]:
    """Every pair of places sharing at least `min_lines` lines and `min_tokens` tokens."""
    lines = {str(p): code_lines(p.read_text(), renamed) for p in files}
    pairs: list[Pair] = []
    for run in runs(_matching_windows(lines, min_lines), min_lines):
        a_rows = lines[run.a][run.a_first : run.a_last + 1]
        tokens = sum(len(t) for _, t in a_rows)
        if tokens < min_tokens:
            continue
        b_rows = lines[run.b]
        first = (run.a, a_rows[0][0], a_rows[-1][0])
        second = (run.b, b_rows[run.b_first][0], b_rows[run.b_last][0])
        pairs.append(Pair(first, second, tokens))
    return sorted(pairs, key=lambda p: (p.first, p.second))


def long_functions(files: list[Path], limit: int) -> list[tuple[str, int]]:
    """(file:row name, lines) of every function longer than `limit`, decorators included."""
    found: list[tuple[str, int]] = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, DEFS):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                size = (node.end_lineno or node.lineno) - first + 1
                if size > limit:
                    found.append((f"{path}:{node.lineno} {node.name}", size))
    return found


def text_rows(tree: ast.Module) -> set[int]:
    """Rows of multi-line module-level text constants (`NAME = \"\"\"…\"\"\"`, SQL), not code."""
    rows: set[int] = set()
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        text = isinstance(value, ast.Constant) and isinstance(value.value, str)
        if text and node.end_lineno and node.end_lineno > node.lineno:  # a block of text
            rows.update(range(node.lineno, node.end_lineno + 1))
    return rows


def long_files(files: list[Path], limit: int) -> list[tuple[str, int]]:
    """(file, lines) of every file longer than `limit` once its text constants are taken out."""
    found: list[tuple[str, int]] = []
    for path in files:
        source = path.read_text()
        size = len(source.splitlines()) - len(text_rows(ast.parse(source)))
        if size > limit:
            found.append((str(path), size))
    return found


def _print_pairs(title: str, pairs: list[Pair]) -> None:
    print(f"{title}: {len(pairs)} pairs")
    for pair in pairs:
        print(f"  {pair}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[Path("src/tokendock")])
    parser.add_argument("--min-lines", type=int, default=6)
    parser.add_argument("--min-tokens", type=int, default=40, help="skip runs of brackets")
    parser.add_argument("--function-limit", type=int, default=80)
    parser.add_argument("--file-limit", type=int, default=400)
    args = parser.parse_args()
    files = python_files(args.roots)
    floor = f">= {args.min_lines} lines, >= {args.min_tokens} tokens"
    exact = repeated(files, args.min_lines, args.min_tokens, renamed=False)
    _print_pairs(f"Repeated code, exact ({floor})", exact)
    renamed = repeated(files, args.min_lines, args.min_tokens, renamed=True)
    _print_pairs(f"Repeated code, names and literals erased ({floor})", renamed)
    functions = long_functions(files, args.function_limit)
    print(f"Functions over {args.function_limit} lines: {len(functions)}")
    for where, size in functions:
        print(f"  {where} ({size} lines)")
    big = long_files(files, args.file_limit)
    print(
        f"Files over {args.file_limit} lines, module-level text constants not counted: {len(big)}"
    )
    for where, size in big:
        print(f"  {where} ({size} lines)")
    print(
        f"exact pairs: {len(exact)}  renamed pairs: {len(renamed)}  "
        f"long functions: {len(functions)}  long files: {len(big)}"
    )


if __name__ == "__main__":
    main()
