"""The gitignore-like pattern rules of jobs.volume.patterns, as a table of cases."""

from __future__ import annotations

import pytest

from jobs.volume.patterns import SKIP, TAKE, WALK, PathFilter, PatternError, Selection, compile_pattern

D, F = True, False  # is_dir

# (patterns, path, is_dir, excluded)
CASES: list[tuple[list[str], str, bool, bool]] = [
    # a name without "/" matches at any depth, files and directories alike
    (["*.log"], "a.log", F, True),
    (["*.log"], "x/y/a.log", F, True),
    (["*.log"], "a.log.gz", F, False),
    (["*.log"], "logs", D, False),
    (["cache"], "cache", D, True),
    (["cache"], "deep/er/cache", F, True),
    (["cache"], "cachefile", F, False),
    # a leading or middle "/" anchors to the root
    (["/build"], "build", D, True),
    (["/build"], "src/build", D, False),
    (["logs/*.gz"], "logs/a.gz", F, True),
    (["logs/*.gz"], "x/logs/a.gz", F, False),
    (["logs/*.gz"], "logs/sub/a.gz", F, False),  # "*" stops at "/"
    # a trailing "/" matches directories only
    (["tmp/"], "tmp", D, True),
    (["tmp/"], "tmp", F, False),
    (["tmp/"], "a/tmp", D, True),
    (["/tmp/"], "a/tmp", D, False),
    # ? and character classes, never across "/"
    (["file?.txt"], "file1.txt", F, True),
    (["file?.txt"], "file10.txt", F, False),
    (["a?b"], "a/b", F, False),
    (["[abc].txt"], "b.txt", F, True),
    (["[abc].txt"], "d.txt", F, False),
    (["[a-c]x"], "bx", F, True),
    (["[!a-c]x"], "bx", F, False),
    (["[!a-c]x"], "dx", F, True),
    (["[^a-c]x"], "dx", F, True),
    (["[]]"], "]", F, True),
    # ** components
    (["**/foo"], "foo", F, True),
    (["**/foo"], "a/b/foo", F, True),
    (["**/foo/bar"], "a/foo/bar", F, True),
    (["a/**"], "a/x/y", F, True),
    (["a/**"], "a", D, False),
    (["a/**/b"], "a/b", F, True),
    (["a/**/b"], "a/x/y/b", F, True),
    (["a/**/b"], "ab", F, False),
    (["a**b"], "axxb", F, True),  # not a whole component: a plain "*"
    (["a**b"], "a/b", F, False),
    # negation: the last match wins
    (["*.log", "!keep.log"], "keep.log", F, False),
    (["*.log", "!keep.log"], "drop.log", F, True),
    (["!keep.log", "*.log"], "keep.log", F, True),
    (["/data/*", "!/data/important"], "data/important", D, False),
    (["/data/*", "!/data/important"], "data/other", D, True),
    # escapes, comments, blanks, trailing spaces
    (["\\!bang"], "!bang", F, True),
    (["\\#hash"], "#hash", F, True),
    (["#comment"], "#comment", F, False),
    (["", "   "], "x", F, False),
    (["trail   "], "trail", F, True),
    (["space\\ "], "space ", F, True),
    (["a\\*b"], "a*b", F, True),
    (["a\\*b"], "axb", F, False),
    (["a//b"], "a/b", F, True),
]


@pytest.mark.parametrize(("patterns", "path", "is_dir", "excluded"), CASES)
def test_pattern_table(patterns: list[str], path: str, is_dir: bool, excluded: bool) -> None:
    assert PathFilter.compile(patterns).matches(path, is_dir) is excluded


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[abc", "without a closing"),
        ("!", "matches nothing"),
        ("/", "matches nothing"),
        ("abc\\", "lone"),
        ("a\0b", "NUL"),
        ("[z-a]", "not a valid glob"),
    ],
)
def test_invalid_patterns_name_the_pattern_and_origin(line: str, message: str) -> None:
    with pytest.raises(PatternError, match=message) as info:
        compile_pattern(line, "dataMoverConfig.excludes")
    assert str(info.value).startswith("dataMoverConfig.excludes")


def test_texts_keep_the_patterns_in_order_without_comments() -> None:
    f = PathFilter.compile(["# header", "*.tmp", "", "!keep.tmp", "/cache/  "])
    assert f.texts == ["*.tmp", "!keep.tmp", "/cache/"]
    assert not PathFilter.compile(["# only a comment"])


@pytest.mark.parametrize(
    ("pattern", "dir_path", "may"),
    [
        ("/a/b/c", "a", True),
        ("/a/b/c", "a/b", True),
        ("/a/b/c", "x", False),
        ("/a/b/c", "a/b/c", False),  # the directory itself: a match, not a match below
        ("/a/*/c", "a/zz", True),
        ("/a/**", "a/deep/er", True),
        ("name", "anything/at/all", True),
    ],
)
def test_may_match_below(pattern: str, dir_path: str, may: bool) -> None:
    assert PathFilter.compile([pattern]).may_match_below(dir_path) is may


def test_selection_decides_take_walk_skip() -> None:
    sel = Selection(PathFilter.compile(["/dir/nested"]), PathFilter.compile(["*.tmp"]))
    assert sel.decide("dir", D, inside_included=False) == WALK
    assert sel.decide("other", D, inside_included=False) == SKIP
    assert sel.decide("dir/nested", D, inside_included=False) == TAKE
    assert sel.decide("dir/nested/x.txt", F, inside_included=True) == TAKE
    assert sel.decide("dir/nested/x.tmp", F, inside_included=True) == SKIP
    everything = Selection(excludes=PathFilter.compile(["/skip"]))
    assert everything.decide("keep", D, inside_included=False) == TAKE
    assert everything.decide("skip", D, inside_included=False) == SKIP
