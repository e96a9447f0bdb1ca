"""Gitignore-like path patterns: which entries a backup leaves out, which a restore brings back.

Used by the backup walker (``--exclude``, ``--exclude-file``, the DataUpload's
``dataMoverConfig.excludes``), by ``snapmover download --include/--exclude`` and by
``snapmover ls``. Paths are relative to the snapshot root (the backed-up directory), with ``/``
between components and no leading ``/``.

The rules (also in the README and ``snapmover upload --help``):

* One pattern per line of an exclude file; blank lines and lines starting with ``#`` are
  ignored (``\\#`` for a leading ``#``); trailing spaces are dropped unless escaped (``\\ ``).
* A pattern with a ``/`` at its start or in its middle is anchored: it matches the whole path
  from the root (``/build`` is only the top-level ``build``, ``logs/*.gz`` only under the
  top-level ``logs``). A pattern without one matches an entry's name at any depth.
* A trailing ``/`` matches directories only (``cache/``).
* ``*`` matches any run of characters but ``/``; ``?`` one character but ``/``; ``[abc]``,
  ``[a-z]``, ``[!a-z]`` (or ``[^a-z]``) one character of (not of) the set; ``\\x`` is a literal x.
* ``**`` as a whole component: a leading ``**/`` matches in every directory, a trailing ``/**``
  everything inside, ``a/**/b`` zero or more directories between. Other ``**`` act as ``*``.
* ``!pattern`` re-includes what an earlier pattern excluded; the last matching pattern wins.
  An entry inside an excluded directory cannot be re-included: an excluded directory is never
  read, so nothing below it is seen (git's rule too).

A bad pattern (an unclosed ``[``, a lone ``!``, a trailing ``\\``, a NUL) raises
:class:`PatternError` naming the pattern and where it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from jobs.errors import UsageError

GLOBSTAR: Final = "**"


class PatternError(UsageError):
    """A pattern that cannot be compiled; the message names it and its origin."""


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern line."""

    text: str  # the line as given (after trailing-space trimming)
    negated: bool
    dir_only: bool
    anchored: bool
    segments: tuple[str, ...]  # the glob split at "/", used to decide whether a directory may hold a match
    regex: re.Pattern[str]

    def matches(self, path: str, is_dir: bool) -> bool:
        """Whether the pattern (ignoring ``!``) matches ``path`` itself."""
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(path) is not None

    def may_match_below(self, dir_path: str) -> bool:
        """Whether some entry inside the directory ``dir_path`` might match (conservative: may say yes)."""
        if not self.anchored:
            return True
        parts = dir_path.split("/") if dir_path else []
        for i, part in enumerate(parts):
            if i >= len(self.segments):
                return False
            segment = self.segments[i]
            if segment == GLOBSTAR:
                return True
            if re.fullmatch(_translate_segment(segment, self.text), part) is None:
                return False
        return len(self.segments) > len(parts)


def _strip_trailing_spaces(line: str) -> str:
    end = len(line)
    while end and line[end - 1] == " ":
        backslashes = len(line[: end - 1]) - len(line[: end - 1].rstrip("\\"))
        if backslashes % 2:  # "\ " keeps the space
            break
        end -= 1
    return line[:end]


def _translate_class(glob: str, start: int, text: str) -> tuple[str, int]:
    """The regex of the ``[...]`` at ``glob[start]``; returns it and the index after ``]``."""
    i = start + 1
    negate = i < len(glob) and glob[i] in "!^"
    if negate:
        i += 1
    body: list[str] = []
    first = True
    while i < len(glob) and (glob[i] != "]" or first):
        c = glob[i]
        if c == "\\" and i + 1 < len(glob):
            i += 1
            body.append(re.escape(glob[i]))
        elif c == "-" and body and i + 1 < len(glob) and glob[i + 1] != "]":
            body.append("-")
        else:
            body.append(re.escape(c))
        first = False
        i += 1
    if i >= len(glob):
        raise PatternError(f"pattern {text!r}: '[' without a closing ']'")
    chars = "".join(body)
    return ("[^/" + chars + "]" if negate else "(?!/)[" + chars + "]"), i + 1


def _translate_segment(glob: str, text: str) -> str:
    """The regex of a glob without globstar handling (``*`` and ``**`` both stop at ``/``)."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            while i < len(glob) and glob[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            regex, i = _translate_class(glob, i, text)
            out.append(regex)
            continue
        elif c == "\\":
            if i + 1 >= len(glob):
                raise PatternError(f"pattern {text!r} ends with a lone '\\'")
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _translate(segments: Sequence[str], text: str) -> str:
    """The regex for a whole path: globstar components span directories."""
    out: list[str] = []
    last = len(segments) - 1
    for i, segment in enumerate(segments):
        if segment == GLOBSTAR:
            if i == last:
                out.append(".*" if i == 0 else "/.*")  # "a/**": everything inside a
            elif i == 0:
                out.append("(?:.*/)?")  # "**/a": a at any depth
            else:
                out.append("/(?:.*/)?")  # "a/**/b": zero or more directories between
            continue
        if i > 0 and segments[i - 1] != GLOBSTAR:
            out.append("/")
        out.append(_translate_segment(segment, text))
    return "".join(out)


def compile_pattern(line: str, origin: str = "pattern") -> Pattern | None:
    """Compile one pattern line; None for a blank line or a comment. PatternError when invalid."""
    text = _strip_trailing_spaces(line.rstrip("\r\n"))
    if not text or text.startswith("#"):
        return None
    if "\0" in text:
        raise PatternError(f"{origin}: pattern {text!r} contains a NUL character")
    glob = text
    negated = glob.startswith("!")
    if negated or glob.startswith(("\\!", "\\#")):
        glob = glob[1:]
    dir_only = glob.endswith("/") and not glob.endswith("\\/")
    glob = glob.rstrip("/") if dir_only else glob
    anchored = "/" in glob
    glob = glob.lstrip("/")
    if not glob:
        raise PatternError(f"{origin}: pattern {text!r} matches nothing (give a name or glob)")
    segments = tuple(s for s in glob.split("/") if s)  # "a//b" is "a/b"
    try:
        regex = _translate(segments, text)
        if not anchored:
            regex = "(?:.*/)?" + regex
        compiled = re.compile(regex, re.DOTALL)
    except PatternError as e:
        raise PatternError(f"{origin}: {e}") from None
    except re.error as e:  # e.g. a reversed range [z-a]
        raise PatternError(f"{origin}: pattern {text!r} is not a valid glob ({e.msg})") from None
    return Pattern(text, negated, dir_only, anchored, segments, compiled)


@dataclass(frozen=True)
class PathFilter:
    """An ordered list of patterns; the last one matching a path decides (``!`` re-includes)."""

    patterns: tuple[Pattern, ...] = ()

    @classmethod
    def compile(cls, lines: Iterable[str], origin: str = "pattern") -> PathFilter:
        """Compile pattern lines (blank lines and comments dropped); PatternError names ``origin``."""
        compiled = (compile_pattern(line, origin) for line in lines)
        return cls(tuple(p for p in compiled if p is not None))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    @property
    def texts(self) -> list[str]:
        """The patterns as given, in order (what a snapshot records)."""
        return [p.text for p in self.patterns]

    def matches(self, path: str, is_dir: bool) -> bool:
        """True when the last pattern matching ``path`` is not negated (an exclude list's "excluded")."""
        for pattern in reversed(self.patterns):
            if pattern.matches(path, is_dir):
                return not pattern.negated
        return False

    def may_match_below(self, dir_path: str) -> bool:
        """Whether an entry inside ``dir_path`` could match a (not negated) pattern."""
        return any(not p.negated and p.may_match_below(dir_path) for p in self.patterns)


def read_pattern_file(path: str | Path) -> list[str]:
    """The lines of an exclude file (UTF-8); PatternError when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PatternError(f"cannot read the exclude file {path}: {getattr(e, 'strerror', None) or e}") from e


@dataclass(frozen=True)
class Selection:
    """What a partial restore (or listing) takes: ``includes`` (none: everything) minus ``excludes``.

    An included directory brings everything inside it; an excluded one nothing. Directories on
    the way to an included entry are walked (and restored around what they hold).
    """

    includes: PathFilter = PathFilter()
    excludes: PathFilter = PathFilter()

    def __bool__(self) -> bool:
        return bool(self.includes or self.excludes)

    def decide(self, path: str, is_dir: bool, *, inside_included: bool) -> str:
        """``"take"`` the entry (all of it), ``"walk"`` into a directory only, or ``"skip"`` it.

        ``inside_included``: an ancestor directory was taken already.
        """
        if self.excludes.matches(path, is_dir):
            return SKIP
        if inside_included or not self.includes or self.includes.matches(path, is_dir):
            return TAKE
        if is_dir and self.includes.may_match_below(path):
            return WALK
        return SKIP


TAKE: Final = "take"
WALK: Final = "walk"
SKIP: Final = "skip"
