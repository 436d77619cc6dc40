"""The suite stands alone: its data is in tests/data, complete and unchanged; a test that touches
a path outside the project fails naming it (the isolation plugin); a checkout that lacks a data
file fails the tests that need it, naming the file, instead of stopping at collection. The last
two are checked on pytest runs in a subprocess."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TEST_DATA, VOXDET_MINI, data_file
from isolation import Guard


def test_the_test_data_is_every_file_of_its_checksum_list_unchanged() -> None:
    listed = dict(reversed(line.split("  ", 1)) for line in data_file(TEST_DATA / "SHA256SUMS").read_text().splitlines())
    on_disk = {path.relative_to(TEST_DATA).as_posix() for path in TEST_DATA.rglob("*") if path.is_file()}
    missing = sorted(set(listed) - on_disk)
    changed = sorted(name for name in set(listed) & on_disk
                     if hashlib.sha256((TEST_DATA / name).read_bytes()).hexdigest() != listed[name])
    unlisted = sorted(on_disk - set(listed) - {"SHA256SUMS", "README.md"})
    assert not (missing or changed or unlisted), (
        f"{TEST_DATA} differs from its SHA256SUMS: missing {missing}, changed {changed}, not listed {unlisted}")
    assert len(listed) == 357 and all(name.startswith(("eth80/", "voxdet-mini/")) for name in listed)


def run_pytest(project: Path, basetemp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m pytest -q -rfE` in `project`, as a user runs the suite, with its own basetemp
    and wide summary lines (they are cut to the terminal's width)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000", **env}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
                           f"--basetemp={basetemp}", *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)


def summary_line(output: str, test: str) -> str:
    """The short summary's line of `test` (FAILED or ERROR)."""
    (line,) = [line for line in output.splitlines() if line.split(" ")[0] in ("FAILED", "ERROR") and f"::{test} " in line]
    return line


OUTSIDE_TESTS = '''
import os
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
BESIDE = PROJECT.parent / "sibling" / "files"
ELSEWHERE = Path(os.environ["ELSEWHERE"])


@pytest.fixture(scope="module")
def text_beside() -> str:
    return (BESIDE / "fixture.txt").read_text()


def test_reads_a_file_beside_the_project():
    assert (BESIDE / "eth80.txt").read_text() == "x"


def test_lists_a_folder_beside_the_project():
    assert sorted(os.listdir(BESIDE)) == ["eth80.txt", "fixture.txt", "import.txt"]


def test_a_module_fixture_reads_beside_the_project(text_beside):
    assert text_beside == "x"


def test_writes_elsewhere():
    ELSEWHERE.write_text("x")


def test_stays_inside_the_project_its_tmp_path_and_python(tmp_path):
    assert "pytest" in (PROJECT / "pyproject.toml").read_text()
    (tmp_path / "out.txt").write_text("x")
    assert os.listdir(tmp_path) == ["out.txt"]
    assert (Path(os.__file__).parent / "os.py").read_text()
'''


IMPORT_TEST = '''
from pathlib import Path

TEXT = (Path(__file__).resolve().parents[2] / "sibling" / "files" / "import.txt").read_text()


def test_text():
    assert TEXT == "x"
'''


def test_a_test_touching_a_path_beside_the_project_or_elsewhere_fails_naming_it(tmp_path: Path) -> None:
    project, beside = tmp_path / "work" / "project", tmp_path / "work" / "sibling" / "files"
    (project / "tests").mkdir(parents=True)
    beside.mkdir(parents=True)
    for name in ("eth80.txt", "fixture.txt", "import.txt"):
        (beside / name).write_text("x")
    shutil.copyfile(REPO / "pyproject.toml", project / "pyproject.toml")
    shutil.copyfile(REPO / "tests" / "isolation.py", project / "tests" / "isolation.py")
    (project / "tests" / "conftest.py").write_text('pytest_plugins = ["isolation"]\n')
    (project / "tests" / "test_outside.py").write_text(OUTSIDE_TESTS)
    (project / "tests" / "test_outside_at_import.py").write_text(IMPORT_TEST)
    elsewhere = tmp_path / "elsewhere.txt"
    run = run_pytest(project, tmp_path / "basetemp", "--continue-on-collection-errors", ELSEWHERE=str(elsewhere))
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "3 failed, 1 passed, 2 errors" in output, output
    assert "ERROR collecting tests/test_outside_at_import.py" in output
    assert f"touched outside {project} and its temporary folders: {beside / 'import.txt'} (open)" in output
    expected = {
        "test_reads_a_file_beside_the_project": f"{beside / 'eth80.txt'} (open)",
        "test_lists_a_folder_beside_the_project": f"{beside} (os.listdir)",
        "test_a_module_fixture_reads_beside_the_project": f"{beside / 'fixture.txt'} (open)",
        "test_writes_elsewhere": f"{elsewhere} (open)",
    }
    for test, touched in expected.items():
        line = summary_line(output, test)
        assert f"touched outside {project} and its temporary folders: {touched}" in line, line
    assert summary_line(output, "test_a_module_fixture_reads_beside_the_project").startswith("ERROR")


def test_the_most_specific_folder_decides_so_siblings_stay_refused_inside_allowed_folders() -> None:
    guard = Guard(Path("/usr/src/project"))
    assert guard.allows("/usr/src/project/tests/data/x.png") and guard.allows("/usr/lib/libc.so.6")
    assert not guard.allows("/usr/src/sibling/x.png") and not guard.allows("/usr/src")
    assert not guard.allows("/usr/src/project-old/x.png"), "a name that merely starts like the project's"
    guard.allow("/usr/src/venv")
    assert guard.allows("/usr/src/venv/lib/site.py") and not guard.allows("/usr/src/venvs/x")
    assert not guard.allows("/home/someone/data.txt") and not guard.allows("/")


def test_a_checkout_without_a_data_file_fails_the_tests_that_need_it_naming_the_file(tmp_path: Path) -> None:
    project = tmp_path / "work" / "project"
    for folder in ("retrieval", "conf", "tests"):
        shutil.copytree(REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "pyproject.toml", project / "pyproject.toml")
    missing = project / VOXDET_MINI.relative_to(REPO) / "expected.json"
    missing.unlink()
    run = run_pytest(project, tmp_path / "basetemp", "tests/test_anns.py")
    output = run.stdout + run.stderr
    assert run.returncode == 1 and "error during collection" not in output and "Interrupted" not in output, output
    needing = ("test_queries_match_expected", "test_positives_are_same_set_gallery", "test_gallery_boxes_and_masks",
               "test_leading_zero_masks_repaired", "test_robotools_file_and_sets_filter")
    for test in needing:
        assert f"test data missing: {missing}; restore tests/data" in summary_line(output, test)
    assert f"{len(needing)} errors" in output and " passed" in output, output
