"""The dataset presets a user passes as `dataset=NAME`: conf/dataset/NAME.yaml, each naming a
format (an adapter of this package) and where its data is, and saying what it is in the
comment that opens the file."""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s+")


@dataclass(frozen=True)
class Preset:
    name: str
    format: str
    description: str
    """The first sentence of the file's opening comment."""
    reads: str
    """Where it reads its data with the default paths: its root, or what to set."""


def _description(text: str) -> str:
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    return SENTENCE_END.split(" ".join(comment), maxsplit=1)[0]


def _reads(preset: Path) -> str:
    """The preset's root as the default paths resolve it; what to pass when it has none."""
    paths = OmegaConf.load(CONF / "config.yaml").paths
    cfg = OmegaConf.create({"paths": paths, "dataset": OmegaConf.load(preset)})
    if OmegaConf.is_missing(cfg.dataset, "root"):
        return "dataset.root=<folder> (required)"
    return str(cfg.dataset.root) if "root" in cfg.dataset else "built in"


def presets() -> list[Preset]:
    """Every conf/dataset/*.yaml, by name."""
    return [
        Preset(path.stem, str(OmegaConf.load(path).format), _description(path.read_text()), _reads(path))
        for path in sorted(CONF.glob("dataset/*.yaml"))
    ]


def presets_text(width: int = 100) -> str:
    """The presets as `python -m retrieval.datasets list` prints them: name, format and data
    folder on one line, what it is below."""
    found = presets()
    name_width = max(len(p.name) for p in found) + 2
    format_width = max(len(p.format) for p in found) + 2
    lines = [f"  {'NAME':{name_width}s}{'FORMAT':{format_width}s}READS"]
    for preset in found:
        lines.append(f"  {preset.name:{name_width}s}{preset.format:{format_width}s}{preset.reads}")
        lines.extend(textwrap.wrap(preset.description, width, initial_indent=" " * 6, subsequent_indent=" " * 6,
                                   break_on_hyphens=False))
    return "\n".join(lines)
