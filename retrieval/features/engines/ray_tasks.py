"""The `ray` engine: each missing shard of a store a Ray task, on a Ray cluster.

    python extract.py extract.engine=ray                                   # a local cluster, for the run
    python extract.py extract.engine=ray extract.ray.address=head:6379     # a running cluster

A task receives its shard's items and the `Embedding` (model weights included, put in Ray's
object store once, so every node computes with the driver's weights, whatever its own
caches hold), embeds on the GPU Ray gave it (the CPU when none) and writes the shard
itself, through the same `Store.build_shard` (lock, atomic write, skip when finished) as the
local engine. The nodes see the driver's `retrieval` package (shipped as a Ray `py_modules`
entry) and need its dependencies and the store's folder (a shared file system on a real
cluster). Before any work, the address must answer Ray's own first call (`check_answers`,
through grpcio), so an address that is not a Ray cluster fails at once instead of being
retried for minutes.

A task that fails is run again alone, up to `max_retries` more times; a shard that fails
every try stops the run once the other tasks are done, so every finished shard is kept and
only the failed ones are built by the next run.
"""
from __future__ import annotations

import builtins
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

import retrieval
from retrieval.errors import UserError
from retrieval.features.engines import ENGINES
from retrieval.features.extract import Embedding, embed_shard
from retrieval.features.keys import Item
from retrieval.features.store import Store, shard_name

log = logging.getLogger(__name__)
INSTALL = "pip install -e '.[ray]'"


class ShardsFailed(UserError, RuntimeError):
    """Shards whose every try failed; the others are in the store. One line at the command
    line (the shard and its cause's first line): the tasks' tracebacks are in Ray's log."""


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise UserError(f"extract.engine=ray needs the ray package: {INSTALL}") from None
    return ray


def check_answers(address: str, timeout: float) -> None:
    """Raise UserError unless a Ray cluster answers at `address` (`host:port` of the head's
    GCS, or `ray://host:port` of a Ray Client server) within `timeout` seconds: something must
    listen there, and answer Ray's own first call (the GCS's cluster id; the client server's
    ping), since Ray itself retries anything else, silent or not, for minutes."""
    if address == "auto":  # Ray reads the address of the cluster started on this machine
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"extract.ray.address={address} is not host:port; give the head node's address, e.g. 10.0.0.9:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise UserError(
            f"extract.ray.address={address} does not answer ({error}); start the cluster (ray start --head) "
            "or drop extract.ray.address to run a local one"
        ) from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        log.info("extract.ray.address=%s: RAY_USE_TLS is set, so Ray's handshake is left to ray.init", address)
        return
    problem = _handshake_problem(f"{host}:{port}", address.startswith("ray://"), timeout)
    if problem:
        raise UserError(f"extract.ray.address={address} is not a Ray cluster: {problem}")


def _handshake_problem(target: str, client: bool, timeout: float) -> str | None:
    """Why the gRPC server at `target` did not answer Ray's first call within `timeout`
    seconds (a Ray Client server's ping when `client`, else the GCS's cluster id), or None
    when it did. A cluster that asks for its token (Ray's token authentication) is Ray."""
    try:
        import grpc
    except ImportError:
        raise UserError(f"extract.ray.address needs grpcio to check the address: {INSTALL}") from None
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc

    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:  # straight there, as the socket went
        try:
            if client:
                ping = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
                ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(ping, timeout=timeout)
            else:
                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(gcs_service_pb2.GetClusterIdRequest(),
                                                                                  timeout=timeout)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return None
            if code == grpc.StatusCode.UNAVAILABLE:
                return ("it answers, but not in gRPC (an HTTP server, or another service); "
                        "give the head node's GCS address (port 6379 unless ray start --head was given --port)")
            if code == grpc.StatusCode.UNIMPLEMENTED:
                other = "drop ray:// to reach a GCS" if client else "write ray://host:port for a Ray Client server"
                return f"it speaks gRPC but has no Ray {'Client' if client else 'GCS'} service; {other}"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return (f"it accepted a connection but gave no Ray answer within extract.ray.connect_timeout={timeout:g}s; "
                        "check the address, or raise the timeout for a busy cluster")
            return f"its answer was {code.name} ({error.details()}); check the address"
    return None


@contextmanager
def cluster(address: str | None = None, num_cpus: int | None = None, connect_timeout: float = 10.0) -> Iterator[None]:
    """Ray connected for the block: to the cluster at `address`, or to a local one started
    for the block (`num_cpus` CPUs; null = all) and stopped after it, leaving the process as
    it was (its `print` too). A process already connected (a notebook, a test) keeps its cluster."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    if address:
        check_answers(address, connect_timeout)
    own_print = builtins.print  # Ray swaps in its own when it relays the tasks' logs
    try:
        ray.init(
            address=address or None,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            runtime_env={"py_modules": [retrieval]},
            logging_level=logging.WARNING,
        )
    except ConnectionError as error:
        raise UserError(f"extract.ray.address={address} gave no Ray cluster ({error}); start one with ray start --head") from None
    try:
        yield
    finally:
        ray.shutdown()
        builtins.print = own_print


def _build_shard(folder: str, items: list[Item], embedding: Embedding, wait: bool) -> int | None:
    """A task: what `Store.build_shard` returns for these items, embedded on this task's GPU
    (the CPU when it has none) with the driver's thread count (see `Embedding.threads`)."""
    import ray

    torch.set_num_threads(embedding.threads)
    device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
    by_key = {item.key: item for item in items}
    return Store(Path(folder)).build_shard(
        list(by_key), lambda keys: embed_shard([by_key[key] for key in keys], embedding, device, lambda done: None), wait
    )


def _reason(error: BaseException) -> str:
    """A task's failure in one line: its own exception's, not Ray's wrapping with the traceback."""
    cause = getattr(error, "cause", None) or error
    lines = str(cause).strip().splitlines() or [""]
    return f"{type(cause).__name__}: {lines[0]}"


def _collect(ray: ModuleType, submitted: list, sizes: list[int], progress: Callable[[int], object]
             ) -> tuple[list[int | None], list[tuple[int, BaseException]]]:
    """Wait for every task, counting each shard's items in `progress` as it finishes: the
    outcome of each task (in submission order), and (position, error) of the failed ones."""
    position = {ref: n for n, ref in enumerate(submitted)}
    outcomes: list[int | None] = [None] * len(submitted)
    failed: list[tuple[int, BaseException]] = []
    waiting = list(submitted)
    while waiting:
        [finished], waiting = ray.wait(waiting, num_returns=1)
        n = position[finished]
        try:
            outcomes[n] = ray.get(finished)
        except ray.exceptions.RayError as error:
            failed.append((n, error))
            continue
        if outcomes[n] is not None:
            progress(sizes[n])
    return outcomes, failed


@ENGINES.register("ray")
def on_ray(
    store: Store,
    items: dict[str, Item],
    shard_size: int,
    embedding: Embedding,
    device: torch.device,
    progress: Callable[[int], object],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: float = 1,
    gpus_per_task: float | None = None,
    max_retries: int = 2,
    connect_timeout: float = 10.0,
) -> int:
    """Each shard a Ray task, on a local cluster started for the run or the one at `address`.
    `device` is the driver's: a task computes on the GPU Ray gives it (`gpus_per_task`,
    null = one when the cluster has GPUs)."""
    ray = import_ray()
    with cluster(address, num_cpus, connect_timeout):
        gpus = gpus_per_task if gpus_per_task is not None else min(1, ray.cluster_resources().get("GPU", 0))
        task = ray.remote(_build_shard).options(
            num_cpus=cpus_per_task, num_gpus=gpus, max_retries=max_retries, retry_exceptions=True
        )
        shipped = ray.put(embedding)

        def run(chunks: list[list[str]], wait: bool) -> list[int | None]:
            submitted = [task.remote(str(store.folder), [items[key] for key in chunk], shipped, wait) for chunk in chunks]
            outcomes, failed = _collect(ray, submitted, [len(chunk) for chunk in chunks], progress)
            if failed:
                name, error = shard_name(chunks[failed[0][0]]), failed[0][1]
                raise ShardsFailed(
                    f"{store.folder}: {len(failed)} shard(s) failed after {max_retries + 1} tries each (first: {name}: "
                    f"{_reason(error)}); the finished shards are kept: run again to build only the failed ones"
                ) from error
            return outcomes

        return store.build_with(list(items), shard_size, run)
