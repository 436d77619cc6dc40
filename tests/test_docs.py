"""Every command README.md and docs/ show runs as written when pasted into bash.

Each ```bash block (and each `python ...` command quoted inline in the prose) is read the way
bash reads it: shlex for quotes and comments, `\\` continuations joined, `&&` `||` `|` `;`
chains split, `NAME=value` assignments kept for the `$NAME` expansions after them. Then each
command is checked against what it calls:

- `python extract.py|search.py|evaluate.py ...`: the overrides parse with Hydra's own override
  parser; a sweep (a bare comma) needs -m; every group choice names a preset in conf/; every
  job the command runs (sweeps expanded) composes with Hydra, which refuses changed or deleted
  keys the config lacks, and passes the config schema (`retrieval.config.check`), which
  refuses added `+keys` that are no option.
- `python -m retrieval.<module> ...`: the module exists and its argparse parser accepts the
  arguments.
- `python <path>.py ...` otherwise: the script exists.
- `pip install -e ".[extras]"`: each extra is one pyproject.toml declares.
- any other command: bash finds it (a builtin, or a program on PATH).
A word holding `[`, `*` or `?` unquoted in a python command is refused too: bash may expand it as
a glob, and zsh stops at one that matches no file.

The checks return problems (one line each, naming page, line and command) instead of asserting,
so the negative tests below can show each of them failing on a broken example.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import itertools
import logging
import re
import runpy
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from retrieval import config
from retrieval.config import values as config_values
from retrieval.search.index import TooFewTrainingVectors, trained_index

from conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
CONF = REPO / "conf"
ENTRY_POINTS = ("extract.py", "search.py", "evaluate.py")
MULTIRUN_FLAGS = ("-m", "--multirun")
SEPARATORS = ("&&", "||", "|", ";", "&")
SHELL = {"HOME": "/home/user"}
"""The variables a pasted command may use before assigning them."""
SUBSTITUTED = "outputs/demo/effnet_lite0-box/2026-01-01_00-00-00/"
"""What a `$(...)` command substitution stands for here: a run folder, the one thing the docs
compute that way (`run=$(ls -td outputs/*/*/*/ | head -1)`)."""
SUBSTITUTION = re.compile(r"\$\((?:[^()]|\([^()]*\))*\)")
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
EXPANSION = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
INLINE_COMMAND = re.compile(r"(?<!`)`(python [^`]+)`(?!`)")
GLOB = re.compile(r"[\[*?]")
BUILTINS = ("cd", "export", "source", "echo", "set", "unset")
MACHINE = re.compile(r"needs the \S+ package|package is not installed|(torch|faiss) sees no")
"""Schema messages about what this machine lacks, not about the command."""


@dataclass(frozen=True)
class Line:
    """A logical command line of a page: where it starts, and its text."""

    where: str
    text: str


# ------------------------------------------------------------------ reading the pages


def command_lines(markdown: str, name: str) -> Iterator[Line]:
    """Each logical line of each ```bash block (continuations joined) and each entry-point
    command quoted inline in the prose (`python evaluate.py ...`), in page order."""
    inside, pending, start = None, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = line.strip().startswith("```")
        if inside is None:
            if fence:
                inside = line.strip()[3:].strip()
                continue
            for span in INLINE_COMMAND.findall(line):
                if any(f" {script}" in span for script in ENTRY_POINTS):
                    yield Line(f"{name}:{number}", span)
            continue
        if fence:
            inside = None
            continue
        if inside != "bash":
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        yield Line(f"{name}:{start}", pending + line)
        pending = ""


def simple_commands(text: str, variables: dict[str, str]) -> list[list[str]]:
    """The words of each simple command of a line, as bash splits them: command substitutions
    replaced by SUBSTITUTED and `$NAME` by its value (neither holds a space or a quote, so
    expanding before splitting is what bash does after), then quotes removed, comments dropped.
    An unset variable is a KeyError naming it."""
    expanded = EXPANSION.sub(lambda m: variables[m[1] or m[2]], SUBSTITUTION.sub(SUBSTITUTED, text))
    lexer = shlex.shlex(expanded, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


# ------------------------------------------------------------------ checking one command


def hydra_problems(args: list[str]) -> list[str]:
    """What an entry point (extract.py, search.py, evaluate.py) would refuse in `args`."""
    multirun = any(arg in MULTIRUN_FLAGS for arg in args)
    args = [arg for arg in args if arg not in MULTIRUN_FLAGS]
    flags = [arg for arg in args if arg.startswith("-")]
    if flags:
        return [f"{flags[0]} is not a flag the entry points take here (only -m)"]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException as error:
        return [f"Hydra cannot parse it: {first_line(error)}"]
    problems = [
        f"{override.input_line} is a sweep: add -m to sweep it, or quote the value to pass it whole "
        f"(\"{override.key_or_group}='a,b'\")"
        for override in overrides if override.is_sweep_override() and not multirun
    ]
    problems += [problem for override in overrides for problem in group_problems(override)]
    if problems:
        return problems
    for job in itertools.product(*(job_values(override) for override in overrides)):
        problems += [f"job {' '.join(job)}: {problem}" if multirun else problem for problem in job_problems(job)]
    return problems


def group_problems(override: Override) -> list[str]:
    """A choice of a config group under conf/ that names no preset there."""
    group = CONF / override.key_or_group
    if override.type == OverrideType.DEL or not group.is_dir():
        return []
    values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    names = [name for value in values for name in (value if isinstance(value, list) else [value])]
    presets = sorted(path.stem for path in group.glob("*.yaml") if not path.stem.startswith("_"))
    return [
        f"{override.key_or_group}={name}: there is no conf/{override.key_or_group}/{name}.yaml "
        f"(presets: {', '.join(presets)})"
        for name in names if name not in presets
    ]


def job_values(override: Override) -> list[str]:
    """The override as each job of a sweep gets it (itself when it sweeps nothing)."""
    if not override.is_sweep_override():
        return [override.input_line]
    return [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]


@functools.lru_cache(maxsize=None)
def job_problems(job: tuple[str, ...]) -> tuple[str, ...]:
    """What Hydra's composition, then the config schema, refuse in one job's overrides (pages
    repeat jobs, and composing is the slow part). What belongs to the reader's machine is left
    out: whether a path the command names exists, and what the schema finds missing here (an
    optional package, a GPU)."""
    with initialize_config_dir(version_base=None, config_dir=str(CONF)):
        try:
            cfg = compose("config", overrides=list(job), return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as error:
            return (f"Hydra refuses it: {first_line(error)}",)
    tree = OmegaConf.to_container(cfg, resolve=False)
    del tree["hydra"]
    try:
        with mock.patch.object(config_values, "_existence_problem", lambda value, kind: None):
            config.check(OmegaConf.create(tree))
    except config.ConfigError as error:
        return () if MACHINE.search(str(error)) else (str(error),)
    return ()


class ArgumentsParsed(Exception):
    """Raised once a module's argparse parser has accepted its arguments: nothing more runs."""


def module_problems(module: str, args: list[str]) -> list[str]:
    """What `python -m module args` refuses before doing any work: a module that does not
    exist, or arguments its argparse parser rejects (the module runs up to its parse)."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return [f"there is no module {module}"]
    if not module.startswith("retrieval"):
        return []
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser: argparse.ArgumentParser, *given, **named):
        parse_args(parser, *given, **named)
        raise ArgumentsParsed

    main = f"{module}.__main__" if spec.submodule_search_locations else module
    stderr = io.StringIO()
    with (mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
          mock.patch.object(sys, "argv", [module, *args]), contextlib.redirect_stderr(stderr),
          contextlib.redirect_stdout(io.StringIO())):
        sys.modules.pop(main, None)  # run afresh, as `python -m` does (runpy warns of an imported one)
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except ArgumentsParsed:
            return []
        except SystemExit as stop:
            if stop.code in (0, None):
                return []
            said = stderr.getvalue().strip().splitlines()
            return [f"python -m {module} refuses its arguments: {said[-1] if said else f'status {stop.code}'}"]
    return []


def extras_problems(words: list[str]) -> list[str]:
    """Extras of `pip install -e ".[a,b]"` that pyproject.toml does not declare."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    asked = [extra for word in words for extra in re.findall(r"^\.\[(.*)\]$", word)]
    return [f"pyproject.toml has no extra {name}" for extras in asked for name in extras.split(",")
            if name not in declared]


def unquoted_globs(words: list[str], text: str) -> list[str]:
    """Words with a glob character that stand in the line's text as they are, unquoted."""
    return [word for word in words if GLOB.search(word)
            and re.search(rf"(?:^|\s){re.escape(word)}(?=$|\s|[;&|])", text)]


def command_problems(words: list[str], text: str) -> list[str]:
    """What would stop the simple command `words` of line `text` (assignments in front dropped)."""
    if words[0] == "pip":
        return extras_problems(words) if "-e" in words else []
    if words[0] not in ("python", "python3") or len(words) < 2:
        known = words[0] in BUILTINS or shutil.which(words[0]) is not None
        return [] if known else [f"bash finds no command {words[0]}"]
    redirections = [word for word in words if word in ("<", ">", "(", ")")]
    if redirections:
        return [f"bash reads {redirections[0]} as shell syntax here (a redirection or a subshell): quote it, "
                "or write placeholders without angle brackets"]
    globs = unquoted_globs(words, text)
    if globs:
        return [f"{globs[0]} is unquoted: bash may expand it as a glob and zsh refuses it; quote it ('{globs[0]}')"]
    if words[1] == "-m":
        return module_problems(words[2], words[3:]) if len(words) > 2 else ["python -m names no module"]
    script = words[1]
    if script in ENTRY_POINTS:
        return hydra_problems(words[2:])
    return [] if (REPO / script).is_file() else [f"there is no script {script} in the repository"]


def problems_in(markdown: str, name: str) -> list[str]:
    """Every problem of every command `markdown` shows, as `name:line: command: problem`."""
    problems = []
    variables = dict(SHELL)
    for line in command_lines(markdown, name):
        try:
            commands = simple_commands(line.text, variables)
        except ValueError as error:
            problems.append(f"{line.where}: {line.text.strip()}: bash cannot split it ({error})")
            continue
        except KeyError as unset:
            problems.append(f"{line.where}: {line.text.strip()}: ${unset.args[0]} is not set")
            continue
        for words in commands:
            assignments = list(itertools.takewhile(ASSIGNMENT.match, words))
            if len(assignments) == len(words):
                variables.update(word.split("=", 1) for word in assignments)
                continue
            found = command_problems(words[len(assignments):], line.text)
            problems += [f"{line.where}: {' '.join(words)}: {problem}" for problem in found]
    return problems


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# ------------------------------------------------------------------ the shipped pages


def test_there_are_pages_and_commands_to_check() -> None:
    """Guards the guard: a parser that found no commands would pass every page."""
    assert (REPO / "docs" / "README.md").is_file()
    found = [line for page in PAGES for line in command_lines(page.read_text(), page.name)]
    assert len(found) > 50
    assert any("-m" in line.text.split() for line in found)


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(REPO)) for page in PAGES])
def test_every_command_of_the_page_runs_as_written(page: Path) -> None:
    assert problems_in(page.read_text(), str(page.relative_to(REPO))) == []


def test_the_pages_and_the_code_cite_only_what_the_repository_holds() -> None:
    """No page sends a reader outside the clone, nothing cites the old FORMATS.md, and every
    citation of docs/formats.md in the code, the tests and the pages names a section it has."""
    sections = set(re.findall(r"^## (\d+)\. ", (REPO / "docs" / "formats.md").read_text(), re.M))
    for page in PAGES:
        assert not re.search(r"\.\./shared|/work/shared", page.read_text()), page
    sources = [*PAGES, *REPO.glob("retrieval/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("conf/**/*.yaml")]
    cited = set()
    for source in sources:
        text = source.read_text()
        if source != Path(__file__).resolve():
            assert "FORMATS.md" not in text, source
        for numbers in re.findall(r"formats\.md(?:#\S+)? (?:sections? )?(\d+(?:(?:, | and )\d+)*)", text):
            cited |= set(re.findall(r"\d+", numbers))
    assert cited and cited <= sections, sorted(cited - sections)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_between_the_pages_arrives() -> None:
    for page in PAGES:
        for target, anchor in re.findall(r"\]\((?!https?:)([^)#\s]*)(?:#([^)\s]+))?\)", page.read_text()):
            linked = (page.parent / target).resolve() if target else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.M)
                assert anchor in {slug(heading) for heading in headings}, f"{page.name}: {target}#{anchor}"


def test_the_readme_is_a_first_screen() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 15_000
    assert "python -m pytest -q\n" in readme


# ------------------------------------------------------------------ each check fails on a broken example


def page(*lines: str) -> str:
    return "Some prose.\n\n```bash\n" + "\n".join(lines) + "\n```\n"


@pytest.mark.parametrize(
    "command, problem",
    [
        ("python evaluate.py index=ivfpq index.factory=IVF4,Flat",
         "index.factory=IVF4,Flat is a sweep: add -m to sweep it, or quote the value"),
        ("python evaluate.py index=ivfpq index.factory='IVF4,Flat'",  # bash strips the only quotes
         "index.factory=IVF4,Flat is a sweep"),
        ("python evaluate.py dataset=folder dataset.root=~/photos", "Hydra cannot parse it"),
        ("python evaluate.py 'rerank=[dba]' && python evaluate.py 'rerank=[dba,alpha_q]'",
         "rerank=alpha_q: there is no conf/rerank/alpha_q.yaml"),
        ("python evaluate.py -m model=effnet_lite0,clip_vit_b23", "model=clip_vit_b23: there is no conf/model/"),
        ("python extract.py extract.bach_size=8", "Hydra refuses it: Could not override 'extract.bach_size'"),
        ("python extract.py +extract.bach_size=8", "extract.bach_size is not an option of extract: did you mean batch_size?"),
        ("python evaluate.py ~index.serach_params", "Hydra refuses it"),
        ("python evaluate.py rerank.verify.top_n=20", "Hydra refuses it"),  # verify not chosen
        ("python evaluate.py -m 'rerank=[],[aqe]' rerank.aqe.k=3", "job rerank=[] rerank.aqe.k=3: Hydra refuses it"),  # its first job has no aqe
        ("python evaluate.py --cfg job", "--cfg is not a flag"),
        ("python evaluate.py eval.ranking=cache/rankings/<key>/ranking.npz", "bash reads < as shell syntax"),
        ("python evaluate.py \"dataset.root='~/photos", "bash cannot split it"),
        ("python evaluate.py dataset=folder dataset.root=$PHOTOS", "$PHOTOS is not set"),
        ("python -m retrieval.datasets prepare roxford5k --rooot data", "unrecognized arguments: --rooot data"),
        ("python -m retrieval.datasets list | compose ...", "bash finds no command compose"),
        ("python -m retrieval.datasets compose --objects data/eth80", "the following arguments are required: --out"),
        ("python evaluate.py rerank=[dba,alpha_qe]", "rerank=[dba,alpha_qe] is unquoted"),
        ("python -m retrieval.reports outputs/run", "there is no module retrieval.reports"),
        ("python bench/bench_nothing.py", "there is no script bench/bench_nothing.py"),
        ("pip install -e \".[cpu,devv]\"", "pyproject.toml has no extra devv"),
    ],
)
def test_a_broken_command_is_named(command: str, problem: str) -> None:
    found = problems_in(page(command), "page.md")
    assert found and all(line.startswith("page.md:4: ") for line in found), found
    assert any(problem in line for line in found), found


@pytest.mark.parametrize(
    "lines",
    [
        ("python evaluate.py index=ivfpq \"index.factory='IVF4,Flat'\" index.target_recall=0.9",),
        ("python evaluate.py -m 'rerank=[],[aqe]' query=full,box",),
        ("python evaluate.py dataset=folder \"dataset.root='~/photos'\"  # a comment with 'quotes",),
        ("python extract.py model=clip_vit_b32 query=composed query.cut=box +query.margin=0.1 \\", "  extract.dtype=float16 && python -m retrieval.datasets list"),
        ("run=$(ls -td outputs/*/*/*/ | head -1)", "python -m retrieval.report \"$run\"",
         "python evaluate.py eval.ranking=\"$run\"ranking.npz"),
        ("python evaluate.py dataset=folder dataset.root=$HOME/photos \"dataset.distractors=[$HOME/junk,$HOME/more.txt]\"",),
        ("OMP_NUM_THREADS=1 python -m retrieval.datasets prepare roxford5k --root data/revisitop",),
        ("pip install -e \".[cpu,dev]\" && python -m pytest -q",),
    ],
)
def test_a_good_command_passes(lines: tuple[str, ...]) -> None:
    assert problems_in(page(*lines), "page.md") == []


def test_an_inline_command_in_the_prose_is_checked_too() -> None:
    prose = "Run `python evaluate.py index.factory=IVF4,Flat` or `python evaluate.py 'rerank=[aqe]'`.\n"
    assert problems_in(prose, "page.md") == [
        "page.md:1: python evaluate.py index.factory=IVF4,Flat: index.factory=IVF4,Flat is a sweep: add -m to sweep "
        "it, or quote the value to pass it whole (\"index.factory='a,b'\")"
    ]


# ------------------------------------------------------------------ the tool's own suggestions paste too


@pytest.mark.parametrize("n_vectors, suggested", [(40, None), (500, "IVF8,PQ32x3"), (1000, "IVF16,PQ32x4")])
def test_the_ivf_refusal_suggests_an_override_that_parses_and_trains_cleanly(
    n_vectors: int, suggested: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal of a factory too large for the gallery names overrides Hydra parses as given,
    pasted into bash; the factory it suggests trains on that gallery without faiss's warning of
    too few points per centroid (none fits 40 vectors: the demo set gets index=flat alone)."""
    vectors = np.random.default_rng(0).standard_normal((n_vectors, 64)).astype(np.float32)
    with pytest.raises(TooFewTrainingVectors) as refused:
        trained_index(vectors, "IVF1024,PQ32")
    words = suggested_overrides(str(refused.value))
    assert words[0] == "index=flat" and hydra_problems(words[:1]) == []
    assert factories(words) == ([suggested] if suggested else [])
    if suggested:
        assert hydra_problems(["index=ivfpq", *words[1:]]) == []
        with caplog.at_level(logging.WARNING, logger="retrieval.search.index"):
            assert trained_index(vectors, suggested).is_trained
        assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_the_too_few_points_warning_suggests_an_override_that_parses(caplog: pytest.LogCaptureFixture) -> None:
    vectors = np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="retrieval.search.index"):
        trained_index(vectors, "IVF64,Flat")
    words = suggested_overrides(caplog.records[-1].getMessage())
    assert factories(words) == ["IVF16,Flat"] and hydra_problems(["index=ivfpq", *words]) == []


def test_the_refusal_of_a_factory_faiss_rejects_suggests_overrides_that_parse() -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.check_index("IVF12,Bogus")
    words = suggested_overrides(str(refused.value))
    assert words[:2] == ["index=flat", "index=hnsw"] and factories(words) == ["IVF1024,PQ32"]
    assert hydra_problems(words[:1]) == hydra_problems(words[1:2]) == hydra_problems(["index=ivfpq", words[2]]) == []


def suggested_overrides(message: str) -> list[str]:
    """The override words of a message's advice (after its `;`), as bash hands them over; a
    factory it names outside an override (`such as IVF8,PQ32x3`) would not paste."""
    words = [word.rstrip(",.") for word in shlex.split(message.split("; ", 1)[1])]
    assert not [word for word in words if re.search(r"IVF\d|PQ\d", word) and "=" not in word], message
    return [word for word in words if "=" in word]


def factories(words: list[str]) -> list[str]:
    """The index.factory values of override words, as Hydra's own parser reads them (no sweep)."""
    overrides = OverridesParser.create().parse_overrides(words)
    assert not any(override.is_sweep_override() for override in overrides)
    return [override.value() for override in overrides if override.key_or_group == "index.factory"]
