"""Extraction engines: a real local Ray cluster builds the very shards, byte for byte, that the
local engine builds; finished shards are skipped whoever built them; a failed shard is retried
alone, boundedly; bad addresses and a missing Ray package are one-line errors."""
from __future__ import annotations

import builtins
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, ComposeFn, copy_eth80
from retrieval import config, pipeline
from retrieval.cli import is_user_error
from retrieval.errors import UserError
from retrieval.features.engines.ray_tasks import INSTALL, ShardsFailed, check_answers, cluster
from retrieval.features.extract import fill_store
from retrieval.features.keys import Item, gallery_items
from retrieval.features.store import SHARD_GLOB, Store, shard_name
from retrieval.models import Embedder
from retrieval.records import Record
from retrieval.representations.whole import GlobalRepresentation
from retrieval.plan import RunPlan

ray = pytest.importorskip("ray")
SHARD = 4
VIEWS = ("000-000", "045-180", "090-068")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local cluster of two CPUs for the module, started by the engine's own code, which
    leaves the process as it found it (Ray swaps `print` for its own while relaying logs). Its
    session files (sockets, logs, spilled objects) go to a temporary folder, not /tmp/ray."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    own_print = builtins.print
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray")))
        with cluster(num_cpus=2):
            yield
    assert builtins.print is own_print


def shard_arrays(folder: Path) -> dict[str, dict[str, bytes]]:
    """Shard name -> its arrays' bytes (and dtype, shape), all but the wall time."""
    out = {}
    for path in sorted(folder.glob(SHARD_GLOB)):
        with np.load(path) as data:
            out[path.name] = {name: (data[name].dtype.str, data[name].shape, data[name].tobytes())
                              for name in data.files if name != "seconds"}
    return out


def stamps(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.glob(SHARD_GLOB)}


def test_ray_builds_the_shards_of_the_local_engine_byte_for_byte(make_cfg: ComposeFn, tmp_path: Path, ray_cluster: None) -> None:
    settings = ("query=full", f"extract.shard_size={SHARD}")
    local_cfg = make_cfg(*settings, f"paths.cache={tmp_path / 'local'}")
    ray_cfg = make_cfg(*settings, f"paths.cache={tmp_path / 'ray'}", "extract.engine=ray")
    local_store = pipeline.features(local_cfg)[1]
    ray_store = pipeline.features(ray_cfg)[1]

    assert local_store.name == ray_store.name  # the engine is no part of the store's key
    built = shard_arrays(ray_store)
    n_images = len(RunPlan.from_config(ray_cfg).dataset.gallery)
    assert len(built) == -(-n_images // SHARD)
    assert built == shard_arrays(local_store)
    merged = {name: RunPlan.from_config(cfg).stores["gallery"].load() for name, cfg in (("local", local_cfg), ("ray", ray_cfg))}
    for field in ("vectors", "row_image", "valid"):
        a, b = getattr(merged["local"], field), getattr(merged["ray"], field)
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), field
    assert merged["local"].errors == merged["ray"].errors == {}

    # Either engine skips what the other built.
    before = {"local": stamps(local_store), "ray": stamps(ray_store)}
    pipeline.features(make_cfg(*settings, f"paths.cache={tmp_path / 'local'}", "extract.engine=ray"))
    pipeline.features(make_cfg(*settings, f"paths.cache={tmp_path / 'ray'}"))
    assert {"local": stamps(local_store), "ray": stamps(ray_store)} == before

    # A truncated shard is set aside and only it is built again, to the same bytes.
    victim = sorted(before["ray"])[0]
    data = (ray_store / victim).read_bytes()
    (ray_store / victim).write_bytes(data[: len(data) // 2])
    pipeline.features(ray_cfg)
    assert (ray_store / f"{victim}.unreadable").is_file()
    after = stamps(ray_store)
    assert {name: t for name, t in after.items() if name != victim} == {n: t for n, t in before["ray"].items() if n != victim}
    assert after[victim] != before["ray"][victim]
    assert shard_arrays(ray_store) == built


class FailingFirst(GlobalRepresentation):
    """Whole images, but a shard's first try fails (or every try, for a shard holding
    `always`); each try leaves a file in `tries`, named after the shard."""

    def __init__(self, tries: Path, always: str = ""):
        super().__init__(max_pixels=10**8)
        self.tries, self.always = str(tries), always

    def worker_dataset(self, items: Sequence[Item], model: Embedder) -> torch.utils.data.Dataset:
        name = shard_name([item.key for item in items])
        earlier = list(Path(self.tries).glob(f"{name}-*"))
        (Path(self.tries) / f"{name}-{uuid.uuid4().hex}").touch()
        if not earlier or any(item.key == self.always for item in items):
            raise RuntimeError(f"simulated failure of {name}")
        return super().worker_dataset(items, model)


def fill(store: Store, items: list[Item], representation: GlobalRepresentation, model: Embedder, engine: str, **options: object) -> dict:
    return fill_store(store, items, representation, model, device=torch.device("cpu"), precision="fp32", batch_size=4,
                      workers=0, shard_size=SHARD, dtype="float32", desc="test", engine=engine, engine_options=options)


def tries_by_shard(folder: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in folder.iterdir():
        name = path.name.rsplit("-", 1)[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.fixture
def photos(tmp_path: Path) -> list[Item]:
    root = copy_eth80(tmp_path / "photos", ("apple1", "cup1", "pear1"), VIEWS)
    paths = sorted((root / "images").rglob("*.png"))
    return gallery_items([Record(path=path, key=path.name, instances=()) for path in paths], root)


def test_a_failed_shard_is_retried_alone_and_boundedly(photos: list[Item], lite0: Embedder, tmp_path: Path, ray_cluster: None) -> None:
    tries = tmp_path / "tries"
    tries.mkdir()
    keys = [item.key for item in photos]
    names = [shard_name(keys[start : start + SHARD]) for start in range(0, len(keys), SHARD)]

    retried = Store(tmp_path / "retried")
    assert fill(retried, photos, FailingFirst(tries), lite0, "ray", max_retries=1)["embedded"] == len(photos)
    assert tries_by_shard(tries) == {name: 2 for name in names}
    reference = Store(tmp_path / "reference")
    fill(reference, photos, GlobalRepresentation(max_pixels=10**8), lite0, "local")
    assert shard_arrays(retried.folder) == shard_arrays(reference.folder)

    for path in tries.iterdir():
        path.unlink()
    poisoned = Store(tmp_path / "poisoned")
    with pytest.raises(ShardsFailed, match=rf"1 shard\(s\) failed after 3 tries each \(first: {names[1]}.*run again") as failed:
        fill(poisoned, photos, FailingFirst(tries, always=keys[SHARD]), lite0, "ray", max_retries=2)
    # at the command line one line (status 2): the shard and its cause's first line, no traceback
    assert is_user_error(failed.value) and "\n" not in str(failed.value)
    assert f"(first: {names[1]}: RuntimeError: simulated failure of {names[1]}); " in str(failed.value)
    assert tries_by_shard(tries) == {names[0]: 2, names[1]: 3, names[2]: 2}
    assert sorted(stamps(poisoned.folder)) == sorted([names[0], names[2]])  # the finished shards are kept


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_address_that_does_not_answer_is_one_line_naming_the_fix() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=rf"^extract.ray.address={address} does not answer \(.*\); start the cluster "
                                        r"\(ray start --head\) or drop extract.ray.address to run a local one$"):
        check_answers(address, timeout=1.0)
    with pytest.raises(UserError, match="is not host:port"):
        check_answers("head-node", timeout=1.0)


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real local HTTP server (what `python -m http.server` runs), in a thread: its address."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"127.0.0.1:{server.server_port}"
        server.shutdown()


def test_an_address_that_answers_but_is_not_ray_is_refused_at_once(http_server: str) -> None:
    started = time.perf_counter()
    with pytest.raises(UserError, match=rf"^extract.ray.address={http_server} is not a Ray cluster: it answers, but not in "
                                        r"gRPC \(an HTTP server, or another service\); give the head node's GCS address"):
        check_answers(http_server, timeout=30.0)
    assert time.perf_counter() - started < 15  # told apart by its answer, not by waiting out the timeout
    with socket.socket() as silent:  # accepts connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(UserError, match=rf"^extract.ray.address={address} is not a Ray cluster: it accepted a connection "
                                            r"but gave no Ray answer within extract.ray.connect_timeout=1s"):
            check_answers(address, timeout=1.0)


def test_a_running_cluster_passes_the_check(ray_cluster: None) -> None:
    gcs = ray.get_runtime_context().gcs_address
    check_answers(gcs, timeout=10.0)
    with pytest.raises(UserError, match=rf"^extract.ray.address=ray://{gcs} is not a Ray cluster: it speaks gRPC but has no "
                                        r"Ray Client service; drop ray:// to reach a GCS$"):
        check_answers(f"ray://{gcs}", timeout=10.0)


@pytest.mark.parametrize("kind, message", [("silent", "does not answer"), ("http", "is not a Ray cluster")])
def test_extract_py_with_an_address_that_is_no_cluster_exits_2(
    folder_root: Path, tmp_path: Path, http_server: str, kind: str, message: str
) -> None:
    address = http_server if kind == "http" else f"127.0.0.1:{free_port()}"
    command = [sys.executable, "extract.py", "dataset=folder", f"dataset.root={folder_root}", f"paths.cache={tmp_path / 'cache'}",
               "model.input_size=64", "extract.engine=ray", f"extract.ray.address={address}", "extract.ray.connect_timeout=5"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: extract.ray.address={address} {message}") and "Traceback" not in done.stderr
    assert not (tmp_path / "cache").exists()  # refused by the config check, before any listing or model load


def test_engine_ray_without_the_package_names_the_install(make_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(config.ConfigError, match="^extract.engine=ray is not valid: the ray package is not installed: " + re.escape(INSTALL)):
        config.check(make_cfg("extract.engine=ray"))
    with pytest.raises(config.ConfigError, match=r"extract.engine=spark is not valid: choose local or ray"):
        config.check(make_cfg("extract.engine=spark"))
