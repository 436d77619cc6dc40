"""What identifies a model's weights in the key of a feature store, beyond its settings.

Every family names its weights by `pretrained` (a hub tag, or True for packaged weights) and
`checkpoint` (a local file), and the store key holds both settings. That is enough for a tag,
whose weights do not change under its name, but not for the other two sources:

- a checkpoint file can be overwritten in place under the same name, so its key adds a
  SHA-256 of its bytes. Not its size and time, as images are keyed: checkpoints of one
  architecture all have the same size, a copy with `cp -p` or `rsync -a` keeps the source's
  time, and coarse file-system clocks give two saves within a second one time; and unlike a
  million images, the one file costs a sequential read of what the extraction loads anyway
  (about 0.6 s a GB). It is read once per process for each state of the file (device, inode,
  size, mtime and ctime; ctime cannot be set back by a copy);
- random weights (`pretrained` null or false, no checkpoint) are built under a fixed seed
  (`retrieval.models.seeded_initialisation`), so their key adds a digest of the built
  network's state: two different random networks (another architecture, option, or a library
  version that initialises differently) never share a store, and the same one always does.
  A nonce per build could not work: the queries and the gallery are extracted by separate
  builds, and the search finds their stores by key without building anything.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from retrieval.models import bound_options, create_model, create_text_model

CHUNK = 16 << 20
"""Bytes read at a time while hashing a checkpoint."""


def weights_identity(family: str, text: bool = False, **options: Any) -> dict[str, str]:
    """{"weights": digest} for weights from a checkpoint file or a random initialisation; {} for
    weights named by a tag, which the settings already identify. `text`: the weights of the
    family's text tower (`create_text_model`), else of its image tower (`create_model`)."""
    bound = bound_options(family, options)
    checkpoint = bound.get("checkpoint")
    if checkpoint:
        return {"weights": checkpoint_digest(Path(checkpoint).expanduser())}
    if "pretrained" in bound and not bound["pretrained"]:
        return {"weights": random_weights_digest(family, text, json.dumps(options, sort_keys=True, default=str))}
    return {}


def checkpoint_digest(path: Path) -> str:
    """`sha256:<hex>` of the file's bytes (hashed once per process for each state of the file)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model.checkpoint={path} does not exist")
    stat = os.stat(path)
    return _file_digest(str(Path(path).resolve()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, *state: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@functools.lru_cache(maxsize=8)
def random_weights_digest(family: str, text: bool, options_json: str) -> str:
    """`init:<hex>`, a digest of the state of the network the options build (seeded)."""
    build = create_text_model if text else create_model
    return "init:" + state_digest(build(family, **json.loads(options_json)))


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state: every entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
