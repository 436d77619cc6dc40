"""The config schema (`retrieval.config`) and how entry points end on a user error (`retrieval.cli`).

Messages are compared whole: each is the one line a user reads instead of a traceback.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from retrieval import cli, config
from retrieval.config import ConfigError
from retrieval.config.command_line import check_command_line
from retrieval.datasets import LOADERS, load_dataset

from conftest import REPO, ComposeFn


def composed(*overrides: str) -> DictConfig:
    """The config as an entry point gets it, with the shipped defaults."""
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        return compose("config", overrides=list(overrides))


def error_of(cfg: DictConfig | dict) -> str:
    with pytest.raises(ConfigError) as caught:
        config.check(cfg)
    message = str(caught.value)
    assert "\n" not in message
    return message


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml") if not p.stem.startswith("_"))


# ------------------------------------------------------------------ the shipped configs pass


@pytest.mark.parametrize("dataset", presets("dataset"))
def test_every_dataset_preset_passes(dataset: str) -> None:
    """Each preset checks, and checking keeps every value it states (paths with `~` expanded)."""
    needs_root = "root: ???" in (REPO / "conf" / "dataset" / f"{dataset}.yaml").read_text()
    cfg = composed(f"dataset={dataset}", *(["dataset.root=/photos"] if needs_root else []))
    resolved = config.resolve(cfg)["dataset"]
    stated = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert resolved == {key: os.path.expanduser(value) if key == "root" else value for key, value in stated.items()}
    assert resolved["name"] == dataset and resolved["format"] in LOADERS.available()


PARTNERS = {("representation", "crop"): ["regions=grid"], ("representation", "roi"): ["regions=grid"],
            ("query", "text"): ["model=clip_vit_b32"], ("query", "composed"): ["model=clip_vit_b32"]}
"""Presets that need another beside them: region representations a regions preset, queries
with words a model with a text tower."""


@pytest.mark.parametrize(
    "group, preset",
    [(group, preset) for group in ("model", "query", "index", "regions", "representation") for preset in presets(group)
     if preset not in ("sam", "text")],
)
def test_every_other_preset_passes(group: str, preset: str) -> None:
    """Each preset checks with the others' defaults (or the partner it needs) and names itself,
    the name results show."""
    resolved = config.resolve(composed(f"{group}={preset}", *PARTNERS.get((group, preset), [])))
    assert resolved[group]["name"] == preset


RUN_PRESETS = {"roi_refine": {"regions": "grid", "representation": "roi", "rerank": ["refine"]}}
"""What each run preset (`preset=...`, a pair of choices that go together) chooses."""


@pytest.mark.parametrize("preset", presets("preset"))
def test_every_run_preset_passes_and_chooses_its_pair(preset: str) -> None:
    resolved = config.resolve(composed(f"preset={preset}"))
    chosen = {group: resolved[group]["name"] for group in ("regions", "representation")}
    assert {**chosen, "rerank": list(resolved["rerank"])} == RUN_PRESETS[preset]


def test_every_rerank_step_passes_in_any_order() -> None:
    """Steps run in the order listed: checking keeps it."""
    steps = presets("rerank")
    assert len(steps) > 1
    for order in (steps, steps[::-1]):
        assert list(config.resolve(composed(f"rerank=[{','.join(order)}]"))["rerank"]) == order


# ------------------------------------------------------------------ one line per bad value


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["extract.dtype=float61"], "extract.dtype=float61 is not valid: choose float32 or float16"),
        (["extract.dtype=int8"], "extract.dtype=int8 is not valid: choose float32 or float16"),
        (["extract.precision=fp61"], "extract.precision=fp61 is not valid: choose auto, fp32, fp16 or bf16"),
        (["query=mask", "query.fill=blurr"], "query.fill=blurr is not valid: choose mean, blur or a number from 0 to 255"),
        (["query=mask", "query.fill=256"], "query.fill=256 is not valid: choose mean, blur or a number from 0 to 255"),
        (["regions=grid", "regions.pooling=roid"], "regions.pooling=roid is not valid: choose crop, roi, segvlad or null"),
        (["regions=grid", "representation.name=roid"], "representation.name=roid is not valid: choose crop, global, rmac, roi, segvlad, text or vlad"),
        (["regions=grid", "representation.crop_size=0"], "representation.crop_size=0 is not valid: use an integer >= 1 or null"),
        (["regions=grid", "representation=roi", "representation.input_sizes=[640,10]"],
         "representation.input_sizes=[640, 10] is not valid: use a list of integers >= 32"),
        (["regions=grid", "representation=roi", "+representation.crop_size=160"],
         "representation.crop_size is not an option of representation roi: did you mean roi_size?"),
        (["representation.whiten=0"], "representation.whiten=0 is not valid: use an integer >= 1 or null"),
        (["representation.fit_sample=1"], "representation.fit_sample=1 is not valid: use an integer >= 2"),
        (["extract.batch_size=0"], "extract.batch_size=0 is not valid: use an integer >= 1"),
        (["extract.batch_size=-4"], "extract.batch_size=-4 is not valid: use an integer >= 1"),
        (["extract.batch_size=8.5"], "extract.batch_size=8.5 is not valid: use an integer >= 1"),
        (["extract.workers=-1"], "extract.workers=-1 is not valid: use an integer >= 0"),
        (["extract.max_pixels=0"], "extract.max_pixels=0 is not valid: use an integer >= 1"),
        (["extract.device=gpu"], "extract.device=gpu is not valid: choose auto or a torch device such as cpu, cuda or cuda:1"),
        (["+extract.bach_size=3"], "extract.bach_size is not an option of extract: did you mean batch_size?"),
        (["dataset=folder"], "dataset.root is required by dataset format folder: add dataset.root=<path>"),
        (["dataset=folder", "dataset.root=/photos", "+dataset.rooot=/x"],
         "dataset.rooot is not an option of dataset format folder: did you mean root?"),
        (["dataset.k=0"], "dataset.k=0 is not valid: use an integer >= 1 or null"),
        (["search.memory_budget=lots"],
         "search.memory_budget=lots is not valid: 'lots' is not a size: write a number and a unit, such as 512MB or 4GB"),
        (["search.memory_budget=4096"], "search.memory_budget=4096 is not valid: add a unit (4096MB?)"),
        (["search.memory_budget=[4]"], "search.memory_budget=[4] is not valid: write a number and a unit, such as 512MB or 4GB"),
        (["search.memory_budget=1KB"], "search.memory_budget=1KB is not valid: a search holds 16MB besides its blocks of "
                                       "vectors; use more than that, or null"),
        (["dataset=vpr", "dataset.positives=gps"], "dataset.positives=gps is not valid: choose utm, vpr_bench or camera"),
        (["dataset=roxford5k", "dataset.crop_queries=maybe"], "dataset.crop_queries=maybe is not valid: use true or false"),
        (["regions=grid", "regions.input_sizes=[640,10]"], "regions.input_sizes=[640, 10] is not valid: use a list of integers >= 32 or null"),
        (["regions=grid", "regions.proposals.grid.overlap=1.0"],
         "regions.proposals.grid.overlap=1.0 is not valid: use a number >= 0 and < 1"),
        (["regions=grid", "+regions.proposals.grdi={}"],
         "regions.proposals.grdi is not an option of regions.proposals: did you mean grid?"),
        (["regions=sam"], "regions.proposals.sam.checkpoint=null is not valid: use the path of an existing file"),
        (["rerank=[dba]", "rerank.dba.k=0"], "rerank.dba.k=0 is not valid: use an integer >= 1"),
        (["rerank=[alpha_qe]", "rerank.alpha_qe.alpha=-1"], "rerank.alpha_qe.alpha=-1 is not valid: use a number >= 0"),
        (["index=hnsw", "index.search_params.efSearch=many"], "index.search_params.efSearch=many is not valid: use a number"),
        (["index=ivfpq", "+index.search_params.nprob=8"],
         "index.search_params.nprob is not an option of index.factory=IVF1024,PQ32: did you mean nprobe?"),
        (["index.factory='IVF1024,PQ32x20'"],
         "index.factory=IVF1024,PQ32x20 is not valid: use at most 16 bits per code (x16); x20 means 1048576-entry codebooks"),
        (["+colour=red"], "colour is not an option of the config: its options are "
         "dataset, eval, extract, hydra, index, model, paths, query, regions, representation, rerank, search"),
    ],
)
def test_a_bad_value_is_one_line_naming_key_value_and_choices(overrides: list[str], message: str) -> None:
    assert error_of(composed(*overrides)) == message


def test_format_choices_are_the_registered_formats() -> None:
    message = error_of(composed("dataset.format=folderr"))
    names = list(LOADERS.available())
    assert message == f"dataset.format=folderr is not valid: choose {', '.join(names[:-1])} or {names[-1]}"


@pytest.mark.parametrize(
    "factory, reason",
    [
        ("Flatt", "could not parse index string Flatt"),
        ("IVF1024,PQ7", "The dimension of the vector (d) should be a multiple of the number of subquantizers (M)"),
    ],
)
def test_an_index_factory_faiss_rejects_is_named(factory: str, reason: str) -> None:
    assert error_of(composed(f"index.factory='{factory}'")) == (
        f"index.factory={factory} is not valid: faiss cannot build it for inner product at d=1280 ({reason}); "
        "use index=flat, index=hnsw or another faiss index_factory string, such as \"index.factory='IVF1024,PQ32'\""
    )


def test_the_factory_is_checked_at_the_models_dimension() -> None:
    """ResNet-50's 2048 takes 1024 sub-quantizers, which 7680 (the size checked without a model) does not."""
    config.check(composed("model=dinov2_vits14", "model.arch=resnet50", "model.pretrained=null", "index.factory='IVF16,PQ1024'"))
    assert "at d=384 " in error_of(composed("model=dinov2_vits14", "index.factory='IVF16,PQ1024'"))


def test_no_pq_size_valid_for_a_shipped_model_is_refused() -> None:
    """Without a model, the check's d (7680) is a multiple of 384, 512, 768 and 1280, the shipped models' sizes:
    every PQ size that fits one of them is accepted, and the sizes that fit none are refused."""
    shipped = {m for dim in (384, 512, 768, 1280) for m in range(1, 129) if dim % m == 0}
    accepted = set()
    for m in range(1, 129):
        try:
            config.check_index(f"IVF1024,PQ{m}")
            accepted.add(m)
        except ConfigError:
            pass
    assert shipped <= accepted
    assert accepted == {m for m in range(1, 129) if 7680 % m == 0}


@pytest.mark.skipif(bool(getattr(__import__("faiss"), "get_num_gpus", lambda: 0)()), reason="faiss sees a GPU")
def test_index_on_gpu_without_one() -> None:
    assert error_of(composed("index.gpu=true")) == (
        "index.gpu=true is not valid: faiss sees no GPU here; use null (the GPU when there is one) or false"
    )


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="torch sees CUDA")
def test_cuda_without_one() -> None:
    assert error_of(composed("extract.device=cuda")) == (
        "extract.device=cuda is not valid: torch sees no CUDA device here; use auto or cpu"
    )


def test_an_unresolvable_interpolation_names_its_key() -> None:
    assert error_of(composed("paths.data=${nowhere}")) == "paths.data is not valid: Interpolation key 'nowhere' not found"


def test_a_plain_dict_is_checked_too() -> None:
    tree = OmegaConf.to_container(composed(), resolve=True)
    config.check(tree)
    tree["extract"]["dtype"] = "float61"
    assert error_of(tree) == "extract.dtype=float61 is not valid: choose float32 or float16"
    del tree["extract"]["dtype"]
    assert error_of(tree) == "extract.dtype is required by extract: add extract.dtype=<value>"


# ------------------------------------------------------------------ checks that need the dataset


def test_query_mask_on_a_dataset_without_masks(make_cfg: ComposeFn, folder_root: Path) -> None:
    cfg = make_cfg("query=mask", "dataset.use_masks=false")
    config.check(cfg)
    without = load_dataset("folder", root=folder_root, use_masks=False)
    with pytest.raises(ConfigError) as caught:
        config.check_dataset(cfg, without)
    assert str(caught.value) == "query=mask needs masks but dataset folder has none: use query=box or query=full"
    config.check_dataset(make_cfg("query=mask"), load_dataset("folder", root=folder_root))
    config.check_dataset(make_cfg("query=box", "dataset.use_masks=false"), without)


@pytest.mark.parametrize(
    "override, message",
    [
        ("+dataset.protocol_options.ap=fyn", None),
        ("+dataset.protocol_options.ap=fine", "dataset.protocol_options.ap=fine is not valid: choose standard or fyn"),
        ("+dataset.protocol_options.ks=[1,0]", "dataset.protocol_options.ks=[1, 0] is not valid: use a list of integers >= 1"),
        ("+dataset.protocol_options.kss=[5]", "dataset.protocol_options.kss is not an option of protocol instance: did you mean ks?"),
    ],
)
def test_protocol_options_are_those_of_the_datasets_protocol(
    make_cfg: ComposeFn, folder_root: Path, override: str, message: str | None
) -> None:
    dataset = load_dataset("folder", root=folder_root)
    if message is None:
        config.check_dataset(make_cfg(override), dataset)
        return
    with pytest.raises(ConfigError) as caught:
        config.check_dataset(make_cfg(override), dataset)
    assert str(caught.value) == message


# ------------------------------------------------------------------ ~ in paths


def test_tilde_is_expanded_in_every_path_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "weights.pth").touch()
    (tmp_path / "ranking.npz").touch()
    (tmp_path / "query-store").mkdir()
    (tmp_path / "gallery-store").mkdir()
    cfg = composed(
        "paths.cache='~/cache'", "paths.data='~/data'", "paths.leaderboard='~/leaderboard.csv'",
        "dataset=roxford5k", "dataset.distractors='~/revisitop1m'", "dataset.pixel_labels='~/labels'",
        "model.checkpoint='~/weights.pth'", "eval.ranking='~/ranking.npz'",
        "search.queries='~/query-store'", "search.gallery='~/gallery-store'",
    )
    resolved = config.resolve(cfg)
    home = str(tmp_path)
    assert resolved["paths"] == {"cache": f"{home}/cache", "data": f"{home}/data", "leaderboard": f"{home}/leaderboard.csv"}
    assert resolved["dataset"]["root"] == f"{home}/data/revisitop"  # through ${paths.data}
    assert resolved["dataset"]["distractors"] == f"{home}/revisitop1m"
    assert resolved["dataset"]["pixel_labels"] == f"{home}/labels"
    assert resolved["model"]["checkpoint"] == f"{home}/weights.pth"
    assert resolved["eval"]["ranking"] == f"{home}/ranking.npz"
    assert resolved["search"] == {"block_size": 4096, "memory_budget": None, "queries": f"{home}/query-store", "gallery": f"{home}/gallery-store"}
    assert config.resolve(OmegaConf.to_container(cfg, resolve=True)) == resolved
    demo = config.resolve(composed("paths.cache='~/cache'"))
    assert demo["dataset"]["cache"] == f"{home}/cache/datasets"
    regions = config.expand_paths(composed("regions=sam", "regions.proposals.sam.checkpoint='~/sam_vit_b.pth'"))
    assert regions["regions"]["proposals"]["sam"]["checkpoint"] == f"{home}/sam_vit_b.pth"
    assert not (Path.cwd() / "~").exists()


def test_a_missing_file_is_named_with_its_expanded_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert error_of(composed("eval.ranking='~/gone/ranking.npz'")) == (
        f"eval.ranking=~/gone/ranking.npz is not valid: no file at {tmp_path}/gone/ranking.npz"
    )
    assert error_of(composed("search.gallery='~/store'")) == f"search.gallery=~/store is not valid: no folder at {tmp_path}/store"


# ------------------------------------------------------------------ the command line, before Hydra


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["rerank=[aqe,aqe]"], "rerank=[aqe,aqe] lists aqe twice"),
        (["dataset=folder", "rerank=[dba, alpha_qe, dba]"], "rerank=[dba,alpha_qe,dba] lists dba twice"),
        (["-m", "rerank=[aqe],[verify,verify]"], "rerank=[verify,verify] lists verify twice"),  # each job of a sweep
        (["+rerank=[bogus]"], "rerank=[bogus] is not valid: bogus is not a re-rank step; choose alpha_qe, aqe, dba, refine or verify"),
        (["rerank=aqe,bogus", "-m"], "rerank=[bogus] is not valid: bogus is not a re-rank step"),
    ],
)
def test_a_rerank_list_hydra_would_merge_or_cannot_load_is_refused(arguments: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_command_line(arguments)
    assert str(caught.value).startswith(message)


def test_every_rerank_preset_listed_once_passes_the_command_line_check() -> None:
    steps = presets("rerank")
    check_command_line([f"rerank=[{','.join(steps)}]", "rerank.aqe.k=3", "~rerank", "rerank=[]", "rerank=null", "--cfg", "job", "rerank=[a"])


# ------------------------------------------------------------------ cli.user_errors, in process


def failing(error: Exception):
    def task(cfg: dict) -> None:
        raise error

    return cli.user_errors(task)


@pytest.mark.parametrize(
    "error", [ConfigError("extract.dtype=float61 is not valid"), cli.UserError("no such preset"), FileNotFoundError("no images under /x")]
)
def test_a_user_error_prints_its_message_and_exits_2(error: Exception, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        failing(error)({})
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"error: {error}\n"


def test_other_errors_propagate(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        failing(RuntimeError("a bug"))({})
    with pytest.raises(FileNotFoundError):  # the OS's, with an errno: not a message the library wrote
        cli.user_errors(lambda cfg: open(tmp_path / "nowhere"))({})


def test_hydra_full_error_lets_a_user_error_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):
        failing(ConfigError("x=1 is not valid"))({})


def test_a_task_that_succeeds_returns_its_value() -> None:
    assert cli.user_errors(lambda cfg: cfg["a"] + 1)({"a": 1}) == 2


# ------------------------------------------------------------------ under Hydra, in a subprocess

APP = """
import hydra
from retrieval import cli, config


@hydra.main(version_base=None, config_path={conf!r}, config_name="config")
@cli.user_errors
def main(cfg):
    cfg = config.resolve(cfg)
    with open(cfg["paths"]["leaderboard"], "a") as rows:
        rows.write(cfg["extract"]["dtype"] + "\\n")


if __name__ == "__main__":
    main()
"""


def run_app(tmp_path: Path, *overrides: str, sweep: bool = False, **env: str) -> subprocess.CompletedProcess:
    """A Hydra app wired as the entry points are meant to be: it writes one 'leaderboard row'."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP.format(conf=str(REPO / "conf"))))
    command = [
        sys.executable, str(app), *(["-m"] if sweep else []), f"paths.leaderboard={tmp_path / 'rows.txt'}",
        f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides,
    ]
    inherited = {name: value for name, value in os.environ.items() if name != "HYDRA_FULL_ERROR"}
    environment = {**inherited, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)


def rows(tmp_path: Path) -> list[str]:
    path = tmp_path / "rows.txt"
    return path.read_text().split() if path.exists() else []


def test_under_hydra_a_bad_value_exits_2_without_traceback(tmp_path: Path) -> None:
    done = run_app(tmp_path, "extract.dtype=float61")
    assert done.returncode == 2
    assert "error: extract.dtype=float61 is not valid: choose float32 or float16\n" in done.stderr
    assert "Traceback" not in done.stderr
    assert rows(tmp_path) == []


def test_under_hydra_full_error_shows_the_traceback(tmp_path: Path) -> None:
    done = run_app(tmp_path, "extract.dtype=float61", HYDRA_FULL_ERROR="1")
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "ConfigError: extract.dtype=float61 is not valid" in done.stderr
    assert rows(tmp_path) == []


def test_a_sweep_runs_its_good_jobs_and_fails_the_bad_one(tmp_path: Path) -> None:
    """In a sweep the bad job fails (no row) but the others run; Hydra exits 1, not 2."""
    done = run_app(tmp_path, "extract.dtype=float32,float61,float16", sweep=True)
    assert done.returncode == 1
    assert rows(tmp_path) == ["float32", "float16"]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("error: extract.dtype=float61 is not valid: choose float32 or float16") == 2  # as it fails, and at the end


# ------------------------------------------------------------------ the real entry points
# These pass once evaluate.py is wired: `@cli.user_errors` under `@hydra.main`, `config.resolve`
# before any stage, and `config.check_dataset` once the dataset is loaded.


def run_evaluate(tmp_path: Path, folder_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "evaluate.py", "dataset=folder", f"dataset.root={folder_root}",
        f"paths.cache={tmp_path / 'cache'}", f"paths.leaderboard={tmp_path / 'leaderboard.csv'}",
        f"hydra.run.dir={tmp_path / 'run'}", "extract.workers=0", "model.input_size=64", "eval.report=false", *overrides,
    ]
    inherited = {name: value for name, value in os.environ.items() if name != "HYDRA_FULL_ERROR"}
    env = {**inherited, "GIT_DIR": str(tmp_path / "no-repository"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["extract.dtype=float61"], "extract.dtype=float61 is not valid: choose float32 or float16"),
        (["query=mask", "query.fill=blurr"], "query.fill=blurr is not valid: choose mean, blur or a number from 0 to 255"),
        (["query=mask", "dataset.use_masks=false"], "query=mask needs masks but dataset folder has none: use query=box or query=full"),
        (["rerank=[aqe,aqe]"], "rerank=[aqe,aqe] lists aqe twice, but a step's options are one node (rerank.aqe), so it can "
                               "run only once: list each step once"),
        (["rerank=[bogus]"], "rerank=[bogus] is not valid: bogus is not a re-rank step; choose alpha_qe, aqe, dba, refine or verify"),
    ],
)
def test_entry_point_wired_evaluate_refuses_a_bad_config_before_any_work(
    tmp_path: Path, folder_root: Path, overrides: list[str], message: str
) -> None:
    done = run_evaluate(tmp_path, folder_root, *overrides)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"error: {message}\n" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "leaderboard.csv").exists()
    assert not (tmp_path / "cache" / "features").exists()


def test_proposer_options_in_the_presets_are_the_proposers_own_defaults() -> None:
    """A preset may list a proposer's options so they can be overridden on the command line;
    then it states the proposer's own defaults (its signature), never a second value."""
    import inspect

    import yaml

    from retrieval.regions.proposals import PROPOSERS

    checked = 0
    for preset in sorted((REPO / "conf" / "regions").glob("*.yaml")):
        for name, options in (yaml.safe_load(preset.read_text()).get("proposals") or {}).items():
            signature = inspect.signature(PROPOSERS.get(name)).parameters
            for key, value in (options or {}).items():
                default = signature[key].default
                expected = list(default) if isinstance(default, tuple) else default
                assert value == expected, f"{preset.name}: {name}.{key}={value!r} but {name}() defaults to {default!r}"
                checked += 1
    assert checked >= 10
