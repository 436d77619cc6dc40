"""Whether hub weights can be had here, told in seconds: cached on this machine, or the hub
answering now.

A library that finds neither (open_clip, timm through huggingface_hub) retries its download
for about a minute and ends in a long traceback; these checks run before any work instead.
The caches are the libraries' own: the Hugging Face hub cache (HF_HOME, HF_HUB_CACHE) for
weights in a hub repository, and the file a URL download is saved as (torch's hub folder,
TORCH_HOME; open_clip's ~/.cache/clip). The hub is unreachable when HF_HUB_OFFLINE is set
(huggingface_hub then never asks it) or when a single request to it gets no answer within
`PROBE_SECONDS` (a refused connection or an unknown host fails at once).
"""
from __future__ import annotations

import functools
import threading
import urllib.error
import urllib.request
from urllib.parse import urlparse

from retrieval.models.base import HubWeights

PROBE_SECONDS = 5.0
"""How long the hub has to answer one request before it counts as unreachable."""


def cached(hub: HubWeights) -> bool:
    """Whether the library would find the weights in its cache (any file it tries)."""
    if hub.repo:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(hub.repo, name), str) for name in hub.files)
    return hub.cached_as is not None and hub.cached_as.is_file()


def unreachable(hub: HubWeights) -> str | None:
    """Why the weights cannot be downloaded now (None: the hub answers)."""
    if hub.repo:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE is set"
        return probe(constants.ENDPOINT)
    return probe(hub.url)


@functools.lru_cache(maxsize=8)
def probe(url: str) -> str | None:
    """None when the server of `url` answers a HEAD request within `PROBE_SECONDS` (with any
    status: it is there), else why not. The request runs in a thread so that a hanging name
    lookup, which no socket timeout bounds, cannot hold the run either. Asked once a process."""
    parts = urlparse(url)
    origin = f"{parts.scheme}://{parts.netloc}/"
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(origin, method="HEAD"), timeout=PROBE_SECONDS).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            outcome.append(f"{parts.netloc}: {reason}")

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(PROBE_SECONDS)
    return outcome[0] if outcome else f"{parts.netloc} did not answer within {PROBE_SECONDS:g} s"
