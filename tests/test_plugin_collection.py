"""The worked-example plugin never passes silently (reports/textbook/examples_plugin.py): a glob
that names no file to collect stops the session with a usage error, the walk collects as pytest
does (norecursedirs, symlink loops), and a claim refused on the data fails in one line.

pytest runs in-process here (pytester): torch is imported by this module first, so the inner
sessions reuse it, and no usage error reaches the engines at all."""
import glob as stdlib_glob
import itertools
import os
import signal
from pathlib import Path

import pytest

from backprop_verify.reports.textbook import errata  # imports torch before any in-process session
from backprop_verify.reports.textbook import examples_plugin as plugin
from backprop_verify.scenarios.loader import ScenarioError
from tests.cases_claims import SIGMOID_NET, claim

USAGE_ERROR = pytest.ExitCode.USAGE_ERROR  # 4: what docs/pytest.md promises a CI
CHAPTER = SIGMOID_NET + claim("a[1]", "layers.1.output", draws=0)  # one item, claim[0], that holds


@pytest.fixture(autouse=True)
def no_hang():
    """A generous timeout against a hang (a walk round a symlink loop), never a bound on speed."""
    def hang(signum, frame):
        raise TimeoutError("still walking after 60 s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def repo(pytester):
    """A repository with a passing test of its own and one chapter: book/ch1.toml."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_other="def test_other():\n    pass\n")
    (pytester.path / "book").mkdir()
    (pytester.path / "book" / "ch1.toml").write_text(CHAPTER)
    return pytester


def _self_referencing_links(folder: Path) -> None:
    """Two links into each other and one up: what a package manager leaves under node_modules."""
    folder.mkdir(parents=True)
    os.symlink("..", folder / "up")
    os.symlink("../pkg", folder / "again")
    os.symlink(".", folder / "here")


def _usage_error(result, line: str) -> None:
    """Exit 4, one ``ERROR:`` line that starts with ``line``, nothing run, no traceback."""
    assert result.ret == USAGE_ERROR, (result.ret, result.stdout.str(), result.stderr.str())
    errors = [text for text in result.stderr.lines if text.startswith("ERROR: ")]
    assert any(text.startswith(f"ERROR: {line}") for text in errors), errors
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()
    assert "passed" not in result.stdout.str()  # the repository's own test did not run either


@pytest.mark.parametrize("make, glob, says", [
    (None, "book/*.tom", "matched nothing under the rootdir"),
    (None, "book", "matched only folders: book; expected at least one worked-example .toml file "
                   "(the files under a folder: 'book/**/*.toml')"),
    (lambda root: (root / "book" / "x.toml").mkdir(), "book/x.toml", "matched only folders: book/x.toml;"),
    (None, "../*.toml", "is outside the rootdir"),
    (None, "", "is empty; expected a glob such as 'book/**/*.toml'"),
    (lambda root: os.mkfifo(root / "book" / "pipe.toml"), "book/pipe.toml",
     "matched no regular .toml file: book/pipe.toml is a FIFO, not a file"),
    (lambda root: os.symlink("loop.toml", root / "book" / "loop.toml"), "book/loop.toml",
     "matched no regular .toml file: book/loop.toml is a symlink loop, not a file"),
    (lambda root: os.symlink("gone.toml", root / "book" / "dangling.toml"), "book/dangling.toml",
     "matched no regular .toml file: book/dangling.toml is a broken symlink"),
    (lambda root: (root / "book" / "notes.txt").write_text(""), "book/*.txt",
     "matched no regular .toml file: book/notes.txt is not a .toml file"),
    (lambda root: ((root / "node_modules").mkdir(), (root / "node_modules" / "ch9.toml").write_text(CHAPTER)),
     "node_modules/*.toml", "matched nothing under the rootdir {root}; pytest's collection skips node_modules"),
    (lambda root: ((root / "build").mkdir(), (root / "build" / "ch9.toml").write_text(CHAPTER),
                   _self_referencing_links(root / "node_modules" / "pkg")),
     "**/ch9.toml", "matched nothing under the rootdir {root}; pytest's collection skips build, node_modules"),
], ids=["nothing", "a_folder", "a_folder_named_x.toml", "outside_the_rootdir", "empty", "fifo", "self_loop_symlink",
        "broken_symlink", "not_toml", "under_node_modules", "only_under_skipped_folders"])
def test_a_glob_that_names_no_file_to_collect_is_a_usage_error(repo, make, glob, says):
    if make:
        make(repo.path)
    result = repo.runpytest_inprocess("--bv-examples", glob)
    _usage_error(result, f"--bv-examples {glob!r}: {says.format(root=repo.path)}")


def test_an_absolute_glob_outside_the_rootdir_and_the_ini_option_are_named(repo):
    outside = repo.path.parent / "*.toml"
    _usage_error(repo.runpytest_inprocess("--bv-examples", str(outside)),
                 f"--bv-examples {str(outside)!r}: is outside the rootdir {repo.path}")
    repo.makeini("[pytest]\nbackprop_verify_examples = book/**/*.toml chapters/*.toml\n")
    result = repo.runpytest_inprocess()
    _usage_error(result, "backprop_verify_examples in tox.ini 'chapters/*.toml': matched nothing")
    assert not any("book/**" in line for line in result.stderr.lines)  # the glob that matched is fine


def test_files_outside_testpaths_are_a_usage_error_and_a_run_given_its_own_paths_checks_those(repo):
    repo.mkdir("tests")
    (repo.path / "test_other.py").rename(repo.path / "tests" / "test_other.py")
    repo.makeini("[pytest]\ntestpaths = tests\nbackprop_verify_examples = book/*.toml\n")
    _usage_error(repo.runpytest_inprocess(),
                 "backprop_verify_examples in tox.ini 'book/*.toml': matched book/ch1.toml, which this run does "
                 "not collect: pytest collects only from tests (testpaths)")
    _usage_error(repo.runpytest_inprocess("tests", "--bv-examples", "book/*.toml"),
                 "--bv-examples 'book/*.toml': matched book/ch1.toml, which this run does not collect: pytest "
                 "collects only from tests (its arguments)")
    repo.runpytest_inprocess("tests").assert_outcomes(passed=1)  # a chosen subset, the ini's book not asked for
    repo.runpytest_inprocess("tests", "book").assert_outcomes(passed=2)


def test_the_files_beside_folders_fifos_and_symlink_tangles_are_collected_once(repo):
    root = repo.path
    (root / "book" / "x.toml").mkdir()
    os.mkfifo(root / "book" / "pipe.toml")
    os.symlink("loop.toml", root / "book" / "loop.toml")
    _self_referencing_links(root / "node_modules" / "pkg")
    (root / "node_modules" / "pkg" / "ch9.toml").write_text(CHAPTER)
    result = repo.runpytest_inprocess("--co", "-q", "--bv-examples", "book/*.toml", "--bv-examples", "**/ch1.toml")
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()
    assert [line for line in result.stdout.lines if "::" in line] == ["book/ch1.toml::claim[0]",
                                                                      "test_other.py::test_other"]


def test_a_repository_s_own_tests_do_not_hide_a_glob_that_matched_nothing(repo):
    repo.runpytest_inprocess("--bv-examples", "book/*.toml").assert_outcomes(passed=2)
    repo.makeini("[pytest]\nbackprop_verify_examples = book/ch2.toml\n")
    _usage_error(repo.runpytest_inprocess(), "backprop_verify_examples in tox.ini 'book/ch2.toml': matched nothing")


@pytest.mark.parametrize("mutant, why", [
    (lambda config: (lambda path: False), "a walk that ignores norecursedirs collects node_modules' chapter"),
    (lambda config: (lambda path: True), "a walk that skips everything collects nothing"),
], ids=["never_skips", "skips_everything"])
def test_injected_bug_the_walk_skips_other_folders_than_pytest(repo, monkeypatch, mutant, why):
    (repo.path / "node_modules").mkdir()
    (repo.path / "node_modules" / "ch9.toml").write_text(CHAPTER)
    monkeypatch.setattr(plugin, "_ignored_by_pytest", mutant)
    with pytest.raises(AssertionError):
        test_a_glob_that_names_no_file_to_collect_is_a_usage_error(
            repo, None, "node_modules/*.toml", "matched nothing under the rootdir {root}; pytest's collection "
                                               "skips node_modules")
        test_the_files_beside_folders_fifos_and_symlink_tangles_are_collected_once(repo)
        pytest.fail(f"not caught: {why}")


def test_injected_bug_files_out_of_the_run_s_reach_pass_silently(repo, monkeypatch):
    monkeypatch.setattr(plugin, "_out_of_reach", lambda config, files, starts: "")
    with pytest.raises(AssertionError):
        test_files_outside_testpaths_are_a_usage_error_and_a_run_given_its_own_paths_checks_those(repo)


# ----------------------------------------------------------------------------- the walk itself

def _tree(root: Path) -> None:
    for path in ("book/ch1.toml", "book/part/ch2.toml", "book/part/deeper/ch3.toml", "book/notes.txt",
                 "book/.draft.toml", "book/.hidden/ch4.toml", "top.toml", "other/x.toml/ch5.toml"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")


@pytest.mark.parametrize("glob", ["book/**/*.toml", "**/*.toml", "book/*.toml", "*.toml", "book/**", "**",
                                  "book/part/*/ch?.toml", "book/[cp]*/*.toml", "other/*.toml/*", "book/.*.toml",
                                  "book/./part/../ch1.toml"])
def test_the_walk_matches_the_files_glob_matches_on_a_tree_without_links(tmp_path, glob):
    """The standard library's glob (recursive, no hidden files) is the oracle on a tree it cannot loop in."""
    _tree(tmp_path)
    expected = sorted(os.path.normpath(path) for path in stdlib_glob.glob(glob, root_dir=tmp_path, recursive=True)
                      if path.endswith(".toml") and (tmp_path / path).is_file())
    matches = plugin.expand(glob, tmp_path, ignored=lambda path: False)
    assert sorted(os.path.relpath(path, tmp_path) for path in matches.files) == expected
    assert expected  # every glob here names a file


def _count_listings(monkeypatch) -> list[Path]:
    listed = []
    listdir = plugin._listdir
    monkeypatch.setattr(plugin, "_listdir", lambda directory: listed.append(directory) or listdir(directory))
    return listed


def _walk_the_tangle(root: Path, monkeypatch) -> None:
    """Self-referencing links where nothing skips them (no norecursedirs): every folder listed once
    per position in the glob, the loops adding nothing."""
    (root / "book").mkdir()
    (root / "book" / "ch1.toml").write_text("")
    for package in ("a", "b", "c"):
        _self_referencing_links(root / "deps" / package / "pkg")
        os.symlink("../../..", root / "deps" / package / "pkg" / "root")
    listed = _count_listings(monkeypatch)
    matches = plugin.expand("**/*.toml", root, ignored=lambda path: False)
    assert matches.problem == "" and [path.relative_to(root).as_posix() for path in matches.files] == ["book/ch1.toml"]
    real_folders = 1 + sum(1 for _ in root.rglob("*") if _.is_dir() and not _.is_symlink())
    assert len(listed) <= 2 * real_folders, len(listed)  # '**' then '*.toml' in each: 2 listings at most


def test_symlink_loops_are_walked_once(tmp_path, monkeypatch):
    _walk_the_tangle(tmp_path, monkeypatch)


def test_injected_bug_a_walk_that_follows_symlinks_into_walked_folders_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(plugin, "MAX_LISTINGS", 500)  # the mutant stops here instead of after 100,000
    arrivals = itertools.count()
    monkeypatch.setattr(plugin, "_identity",  # every arrival looks like a new folder
                        lambda path: (next(arrivals), 0) if os.path.isdir(path) else None)
    with pytest.raises(AssertionError):
        _walk_the_tangle(tmp_path, monkeypatch)


def test_a_glob_too_wide_to_walk_is_refused(tmp_path, monkeypatch):
    for k in range(4):
        (tmp_path / f"d{k}").mkdir()
    monkeypatch.setattr(plugin, "MAX_LISTINGS", 3)
    matches = plugin.expand("**/*.toml", tmp_path, ignored=lambda path: False)
    assert matches.problem.startswith("walks more than 3 folders; expected a narrower glob")


# ----------------------------------------------------------------------------- refusals on the data

GUARDED = (SIGMOID_NET
           # validate_claims' zero arrays give an exponent of 0; the file's weights one of 400
           + claim("sum(2 ** (1000 * W[0]))", "loss", draws=0)
           + claim("a[1]", "layers.1.output", draws=0))


def _fails_in_one_line(result, item: str, line: str) -> None:
    """The item's failure is exactly ``line`` in the failures section: no traceback, no source."""
    text = result.stdout.str()
    assert "Traceback" not in text and "claims.py" not in text and "raise " not in text, text
    section = text.split(f" {item} ")[1].splitlines()
    assert section[1] == line, section[:4]


def test_a_claim_refused_on_the_data_fails_in_one_line_and_the_others_are_judged(repo):
    (repo.path / "book" / "ch1.toml").write_text(GUARDED)
    result = repo.runpytest_inprocess("-rA", "--bv-examples", "book/*.toml")
    result.assert_outcomes(passed=2, failed=1)  # the repository's test and claim[1]
    _fails_in_one_line(result, "ch1.toml::claim[0]",
                       "refused: ch1.toml: claim[0].formula: ** with an exponent of magnitude 400; expected |p| <= 100 "
                       "(on the file's data)")
    result.stdout.fnmatch_lines(["PASSED book/ch1.toml::claim[[]1[]]"], consecutive=False)


def test_a_refusal_while_checking_the_printed_numbers_fails_each_item_in_one_line(repo, monkeypatch):
    (repo.path / "book" / "ch1.toml").write_text(SIGMOID_NET + '\n[[expect]]\nat = "loss"\nprinted = "0.5"\n')

    def refuse(scenario):
        raise ScenarioError("ch1.toml", "expect[0].at", "cannot be computed here")

    monkeypatch.setattr(errata, "check_scenario", refuse)
    result = repo.runpytest_inprocess("--bv-examples", "book/*.toml")
    result.assert_outcomes(passed=1, failed=1)
    _fails_in_one_line(result, "ch1.toml::loss", "refused: ch1.toml: expect[0].at: cannot be computed here")


def test_injected_bug_a_refusal_shown_as_a_traceback_is_caught(repo, monkeypatch):
    monkeypatch.setattr(plugin._FileItem, "repr_failure", pytest.Item.repr_failure)
    with pytest.raises(AssertionError):
        test_a_claim_refused_on_the_data_fails_in_one_line_and_the_others_are_judged(repo)
