"""The one image listing every adapter and the composer read folders with."""
from __future__ import annotations

import os
from pathlib import Path

from retrieval.datasets.listing import IMAGE_SUFFIXES, image_files, is_image_name, visible_entries


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_image_files_at_any_depth_hidden_left_out_sorted_by_relative_path(tmp_path):
    for name in ("b.JPG", "a/z.png", "a-b.webp", "a/deep/c.tif", "notes.txt", ".DS_Store", "._b.jpg",
                 ".thumbnails/t.jpg", "a/.hidden/h.png"):
        touch(tmp_path / name)
    (tmp_path / "folder.jpg").mkdir()  # a folder named like an image
    os.mkfifo(tmp_path / "pipe.jpg")  # would block a reader
    found = [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)]
    assert found == ["a-b.webp", "a/deep/c.tif", "a/z.png", "b.JPG"]  # "-" sorts before "/"
    assert [p.name for p in image_files(tmp_path, recursive=False)] == ["a-b.webp", "b.JPG"]
    assert [p.name for p in image_files(tmp_path, (".jpg", ".png"))] == ["z.png", "b.JPG"]


def test_visible_entries_keep_folders_and_odd_files_for_the_reader_to_judge(tmp_path):
    touch(tmp_path / "b" / "x.jpg")
    touch(tmp_path / "a.jpg")
    touch(tmp_path / ".DS_Store")
    os.mkfifo(tmp_path / "c.jpg")
    assert [p.name for p in visible_entries(tmp_path)] == ["a.jpg", "b", "c.jpg"]


def test_suffixes_match_in_any_case():
    assert all(is_image_name(Path(f"photo{suffix.upper()}")) for suffix in IMAGE_SUFFIXES)
    assert not is_image_name(Path("photo.webp"), (".jpg",)) and not is_image_name(Path("photo.jpg.txt"))
