"""Wall time of extracting a folder dataset with each extraction engine, and whether their stores match.

    python bench/bench_engines.py --data ~/eth80                                # ETH-80 (3,280 images), local then ray
    python bench/bench_engines.py --data ~/eth80 --instances 10 --engines ray   # a 10-instance copy, ray alone

--data is a folder dataset (<data>/images/<instance>/*.png|jpg); --help says how to get ETH-80.
Each engine runs `python extract.py dataset=folder dataset.root=<data> query=full
extract.engine=<engine> paths.cache=<out>/cache-<engine>` (a fresh cache: the folder is
emptied first) as a user would, Ray's cluster start included; `query=full` makes the queries
the gallery's own vectors, so the gallery is embedded once. Then every `<out>/cache-*` there
is compared with the first, shard by shard, all arrays but the wall time byte for byte.
Numbers from a machine that is busy with other work are not comparable: the header prints
the load average.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without `pip install -e .`

from bench.eth80 import add_data_option  # noqa: E402


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_option(parser, help="a folder dataset: <data>/images/<instance>/*.png|jpg, e.g. ETH-80 (see below)")
    parser.add_argument("--instances", type=int, default=0, help="embed a copy of the first N instances (0 = all of --data)")
    parser.add_argument("--engines", nargs="+", default=["local", "ray"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-engines"), help="caches go to <out>/cache-<engine>")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every run, e.g. extract.ray.num_cpus=2")
    return parser.parse_args()


def subset(root: Path, instances: int, out: Path) -> Path:
    """A copy of the first `instances` instance folders (times kept, so item keys match the original's)."""
    copy = out / f"data-{instances}"
    for folder in sorted((root / "images").iterdir())[:instances]:
        if not (copy / "images" / folder.name).is_dir():
            shutil.copytree(folder, copy / "images" / folder.name)
    return copy


def shard_bytes(cache: Path) -> dict[str, dict[str, bytes]]:
    """Per shard, each array but the wall time as dtype, shape and bytes (each member read once:
    an npz decodes a member again on every access)."""
    out = {}
    for path in sorted(cache.glob("features/*/shard-*.npz")):
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files if name != "seconds"}
        out[f"{path.parent.name}/{path.name}"] = {name: f"{array.dtype.str}{array.shape}".encode() + array.tobytes()
                                                 for name, array in arrays.items()}
    return out


def main() -> None:
    args = parse()
    root = subset(args.data, args.instances, args.out) if args.instances else args.data
    images = sum(1 for path in (root / "images").rglob("*") if path.is_file())
    print(f"{images} images under {root}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for engine in args.engines:
        cache = args.out / f"cache-{engine}"
        shutil.rmtree(cache, ignore_errors=True)
        command = [sys.executable, "extract.py", "dataset=folder", f"dataset.root={root}", "query=full",
                   f"extract.engine={engine}", f"paths.cache={cache}", *args.overrides]
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        print(f"engine={engine}: {seconds:.1f} s wall, {images / seconds:.2f} images/s")
    caches = sorted(args.out.glob("cache-*"))
    reference = shard_bytes(caches[0])
    for cache in caches[1:]:
        same = shard_bytes(cache) == reference
        print(f"{cache.name} {'==' if same else '!='} {caches[0].name}: {len(reference)} shards, "
              f"{'every array byte for byte' if same else 'they differ'}")


if __name__ == "__main__":
    main()
