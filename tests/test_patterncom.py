"""PatternCom adapter and protocol (docs/formats.md section 6), checked against longhand readings.

The expected queries and positives are computed here from the CSV text the test writes, the
way the rscir reference's `evaluate.py` does it (string labels, `str.replace` fixes, a
filename -> row dict); the expected scores with numpy and `decimal`, not with the protocol's
helpers.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrieval.datasets import load_dataset
from retrieval.protocols import get_protocol
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth, Record
from tests.fixtures_protocols import run_evaluate, write_image

FOLDERS = {
    "airplane": 3, "dense_residential": 3, "sparse_residential": 3, "closed_road": 2, "intersection": 2,
    "bridge": 2, "overpass": 2, "harbor": 2, "ferry_terminal": 2, "parking_lot": 2, "parking_space": 2,
}
"""PatternNet-like class folders (underscores kept) -> images; files are named without them."""

ATTRIBUTE_CSV = {
    "color": """airplane001.jpg,color,white
airplane002.jpg,color,gray
airplane003.jpg,color,white
denseresidential001.jpg,color,red roofs
denseresidential002.jpg,color,gray roofs
sparseresidential001.jpg,color,gray roofs
sparseresidential002.jpg,color,green roofs
""",
    "context": """bridge001.jpg,context,over a river
bridge002.jpg,context,over a road
overpass001.jpg,context,over a road
overpass002.jpg,context,"over a road, with cars"
""",
    "density": """denseresidential001.jpg,density,dense
denseresidential003.jpg,density,dense

sparseresidential001.jpg,density,sparse
sparseresidential003.jpg,density,sparse
""",
    "existence": """harbor001.jpg,existence,with boats
ferryterminal001.jpg,existence,without boats
parkinglot001.jpg,existence,with cars
parkingspace001.jpg,existence,without cars
parkinglot002.jpg,existence,without cars
harbor002.jpg,existence,with boats
""",
    "quantity": """airplane001.jpg,quantity,one
airplane002.jpg,quantity,two
airplane003.jpg,quantity,three
airplane001.jpg,quantity,two
""",
    "shape": """closedroad001.jpg,shape,straight
intersection001.jpg,shape,cross
closedroad002.jpg,shape,straight
closedroad999.jpg,shape,curved
intersection002.jpg,shape,cross
""",
}
"""What each file exercises: color merges classes for relevance but not for grouping; context
a quoted comma; density a blank line and a merged group; existence two merged pairs; quantity
an image listed twice; shape a row whose image is not in the database (its value is still a
text of its group, one with no positives)."""

MAPPING = {
    "denseresidential": "residential", "sparseresidential": "residential", "closedroad": "road",
    "intersection": "road", "bridge": "roadpass", "overpass": "roadpass", "ferryterminal": "pier",
    "harbor": "pier", "parkingspace": "parking", "parkinglot": "parking",
}
FIXES = {
    "density": [("densitydenseresidential", "densityresidential"), ("densitysparseresidential", "densityresidential")],
    "shape": [("shapeclosedroad", "shaperoad"), ("shapeintersection", "shaperoad")],
    "context": [("contextbridge", "contextroadpass"), ("contextoverpass", "contextroadpass")],
    "existence": [("existenceferryterminal", "existencepier"), ("existenceharbor", "existencepier"),
                  ("existenceparkingspace", "existenceparking"), ("existenceparkinglot", "existenceparking")],
}


def make_patterncom(folder: Path, gallery_list: bool = True) -> list[str]:
    """The PatternNet folder of the rscir README: images/, patternnet.csv, PatternCom/*.csv.
    Returns the database paths (relative to `folder`) in the list's order."""
    paths = []
    for seed, (name, count) in enumerate(FOLDERS.items()):
        for i in range(1, count + 1):
            relative = f"images/{name}/{name.replace('_', '')}{i:03d}.jpg"
            write_image(folder / relative, seed * 10 + i, size=(12, 10))
            paths.append(relative)
    listed = paths[::-1]  # not sorted: the list's order is the gallery's
    if gallery_list:
        lines = [f"{path} {n % 7} {path.split('/')[1]}" for n, path in enumerate(listed)]
        (folder / "patternnet.csv").write_text("\n".join(lines) + "\n")
    (folder / "PatternCom").mkdir(parents=True, exist_ok=True)
    for attribute, text in ATTRIBUTE_CSV.items():
        (folder / "PatternCom" / f"{attribute}.csv").write_text(text)
    return listed if gallery_list else sorted(paths)


def expected_queries(gallery: list[str], relevance: str = "any") -> list[tuple[str, str, str, list[int]]]:
    """(attribute, query file, text, positives) as the reference derives them."""
    names = [os.path.basename(path) for path in gallery]
    expected = []
    for attribute, text in ATTRIBUTE_CSV.items():
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
        labels = [re.split(r"\d", row[0])[0] for row in rows]
        groups = [row[1] + label for row, label in zip(rows, labels)]
        for old, new in FIXES.get(attribute, []):
            groups = [group.replace(old, new) for group in groups]
        values = defaultdict(set)
        for group, row in zip(groups, rows):
            values[group].add(row[2])
        if relevance == "reference":
            last = {row[0]: (row[2], label) for row, label in zip(rows, labels)}
            labelled = {name: [entry] for name, entry in last.items()}
        else:
            labelled = defaultdict(list)
            for row, label in zip(rows, labels):
                labelled[row[0]].append((row[2], label))
        for row, label, group in zip(rows, labels, groups):
            if row[0] not in names:
                continue
            target = MAPPING.get(label, label)
            for prompt in values[group] - {row[2]}:
                positives = [
                    g for g, name in enumerate(names)
                    if any(value == prompt and MAPPING.get(lab, lab) == target for value, lab in labelled.get(name, []))
                ]
                expected.append((attribute, row[0], prompt, positives))
    return sorted(expected)


def loaded_queries(dataset: Dataset) -> list[tuple[str, str, str, list[int]]]:
    return sorted(
        (record.group, record.path.name, record.text, truth.positives.tolist())
        for record, truth in zip(dataset.queries, dataset.truth["all"])
    )


# ------------------------------------------------------------------ the adapter


@pytest.mark.parametrize("relevance", ["any", "reference"])
def test_queries_and_truth_follow_the_reference(tmp_path, relevance):
    gallery = make_patterncom(tmp_path)
    dataset = load_dataset("patterncom", root=tmp_path, relevance=relevance)
    assert dataset.protocol == "patterncom" and list(dataset.truth) == ["all"]
    assert dataset.gallery_keys == gallery  # every image of patternnet.csv, in its order
    assert loaded_queries(dataset) == expected_queries(gallery, relevance)
    assert len(set(dataset.query_keys)) == len(dataset.queries)
    by_name = {Path(path).name: tmp_path / path for path in gallery}
    assert all(record.path == by_name[record.path.name] for record in dataset.queries)
    assert dataset.extra["attributes"]["quantity"]["duplicate_rows"] == 1
    assert dataset.skipped == [("PatternCom/shape.csv:4", dataset.skipped[0][1])]
    assert "closedroad999.jpg" in dataset.skipped[0][1]


def test_points_the_reference_decides(tmp_path):
    gallery = make_patterncom(tmp_path)
    names = [Path(path).name for path in gallery]
    dataset = load_dataset("patterncom", root=tmp_path)
    asked = {(r.group, r.path.name, r.text): t.positives.tolist() for r, t in zip(dataset.queries, dataset.truth["all"])}
    # color groups by unmerged class, but relevance merges dense and sparse residential
    assert asked[("color", "denseresidential001.jpg", "gray roofs")] == sorted(
        [names.index("denseresidential002.jpg"), names.index("sparseresidential001.jpg")]
    )
    assert ("color", "denseresidential001.jpg", "green roofs") not in asked  # a sparse image's value
    assert asked[("color", "sparseresidential001.jpg", "green roofs")] == [names.index("sparseresidential002.jpg")]
    # density merges the group: a dense image asks for sparse ones of either class
    assert asked[("density", "denseresidential001.jpg", "sparse")] == sorted(
        [names.index("sparseresidential001.jpg"), names.index("sparseresidential003.jpg")]
    )
    # the raw value is the text, csv quoting undone, no prompt template
    assert asked[("context", "bridge001.jpg", "over a road, with cars")] == [names.index("overpass002.jpg")]
    # a value from a row whose image is missing is still asked, and has no positives
    assert asked[("shape", "intersection001.jpg", "curved")] == []
    assert dataset.extra["queries_without_positives"] == 4  # curved, from the other four road images
    # the query image stays in the gallery and is not junk
    assert all(len(t.junk) == 0 for t in dataset.truth["all"])


def test_image_listed_twice(tmp_path):
    gallery = make_patterncom(tmp_path)
    twice = [Path(p).name for p in gallery].index("airplane001.jpg")
    by_mode = {}
    for mode in ("any", "reference"):
        dataset = load_dataset("patterncom", root=tmp_path, relevance=mode)
        by_mode[mode] = {
            (r.path.name, r.text): t.positives.tolist()
            for r, t in zip(dataset.queries, dataset.truth["all"]) if r.group == "quantity"
        }
    assert twice in by_mode["any"][("airplane003.jpg", "one")]
    assert twice not in by_mode["reference"][("airplane003.jpg", "one")]  # its last row says two
    assert twice in by_mode["reference"][("airplane003.jpg", "two")]


def test_layout_with_patternnet_and_patterncom_side_by_side(tmp_path):
    gallery = make_patterncom(tmp_path / "PatternNet")
    (tmp_path / "PatternNet" / "PatternCom").rename(tmp_path / "PatternCom")
    dataset = load_dataset("patterncom", root=tmp_path)
    assert dataset.root == tmp_path / "PatternNet" and dataset.gallery_keys == gallery
    assert loaded_queries(dataset) == expected_queries(gallery)


def test_without_gallery_list_every_image_sorted_hidden_ignored(tmp_path):
    gallery = make_patterncom(tmp_path, gallery_list=False)
    write_image(tmp_path / "images" / "airplane" / "._airplane001.jpg", 1)
    write_image(tmp_path / "images" / ".thumbnails" / "airplane001.jpg", 2)
    (tmp_path / "images" / "airplane" / ".DS_Store").write_bytes(b"\0")
    os.mkfifo(tmp_path / "images" / "airplane" / "airplane009.jpg")
    dataset = load_dataset("patterncom", root=tmp_path, attributes=["color", "quantity"])
    assert dataset.gallery_keys == gallery
    assert dataset.skipped[0][0] == "images/airplane/airplane009.jpg" and "FIFO" in dataset.skipped[0][1]
    assert {r.group for r in dataset.queries} == {"color", "quantity"}
    assert loaded_queries(dataset) == [q for q in expected_queries(gallery) if q[0] in ("color", "quantity")]


def test_wrong_layouts_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout") as error:
        load_dataset("patterncom", root=tmp_path)
    assert "PatternCom/<attribute>.csv" in str(error.value)
    make_patterncom(tmp_path)
    (tmp_path / "PatternCom" / "shape.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"shape\.csv[\s\S]*Expected layout"):
        load_dataset("patterncom", root=tmp_path)
    (tmp_path / "PatternCom" / "shape.csv").write_text("closedroad001.jpg,shape\n")
    with pytest.raises(ValueError, match=r"shape\.csv:1: expected 'filename,attribute,value'"):
        load_dataset("patterncom", root=tmp_path)
    (tmp_path / "PatternCom" / "shape.csv").write_text("images/road/closedroad001.jpg,shape,straight\n")
    with pytest.raises(ValueError, match="bare file name"):
        load_dataset("patterncom", root=tmp_path)
    (tmp_path / "PatternCom" / "shape.csv").write_text(ATTRIBUTE_CSV["shape"])
    (tmp_path / "images" / "bridge" / "bridge001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 25 images listed in .*patternnet.csv"):
        load_dataset("patterncom", root=tmp_path)
    (tmp_path / "patternnet.csv").write_text("images/bridge/bridge002.jpg 0\n")
    with pytest.raises(ValueError, match=r"patternnet.csv:1: expected 'path unused class'"):
        load_dataset("patterncom", root=tmp_path)
    with pytest.raises(ValueError, match="relevance must be one of"):
        load_dataset("patterncom", root=tmp_path, relevance="all")


def test_attribute_file_that_is_a_fifo_is_refused(tmp_path):
    make_patterncom(tmp_path)
    (tmp_path / "PatternCom" / "color.csv").unlink()
    os.mkfifo(tmp_path / "PatternCom" / "color.csv")
    with pytest.raises(FileNotFoundError, match="FIFO"):
        load_dataset("patterncom", root=tmp_path)


# ------------------------------------------------------------------ the protocol


def percent(value: float) -> float:
    """x100 rounded to 2 decimals as Python's round does: half to even on the exact binary value."""
    return float(Decimal(value * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def two_decimals(value: float) -> float:
    return float(Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def longhand_ap(row: list[int], positives: list[int]) -> float:
    places = np.flatnonzero(np.isin(np.asarray(row), positives)) + 1
    return float(np.mean(np.arange(1, len(places) + 1) / places)) if len(places) else 0.0


def ranking_for(dataset: Dataset, rows: list[list[int]]) -> Ranking:
    indices = np.asarray(rows, dtype=np.int64)
    return Ranking(
        indices=indices,
        scores=np.zeros(indices.shape, dtype=np.float32),  # all tied: the order given is scored
        query_ids=np.asarray(dataset.query_keys),
        gallery_ids=np.asarray(dataset.gallery_keys),
    )


def hand_made() -> tuple[Dataset, list[list[int]]]:
    """Six gallery images; three color pairs whose rounded mean is 55.55 (55.56 unrounded),
    two shape pairs (one without positives), one existence pair found twice."""
    gallery = [Record(path=Path(f"g{i}.jpg"), key=f"g{i}.jpg") for i in range(6)]
    spec = [  # group, positives, ranking
        ("color", [4], [4, 0, 1, 2, 3, 5]),        # rank 1: 100
        ("color", [2], [0, 1, 2, 3, 4, 5]),        # rank 3: 33.33
        ("color", [5, 1], [3, 4, 5, 0, 2, 1]),     # ranks 3, 6: 33.33
        ("shape", [0], [5, 0, 1, 2, 3, 4]),        # rank 2: 50
        ("shape", [], [0, 1, 2, 3, 4, 5]),         # no positives
        ("existence", [3, 4], [3, 0, 1, 2, 5, 4]),  # ranks 1, 6: 66.67
    ]
    queries = [Record(path=Path("q.jpg"), key=f"q{i}", group=group, text="t") for i, (group, _, _) in enumerate(spec)]
    truths = [QueryTruth(positives=np.asarray(positives, dtype=np.int64)) for _, positives, _ in spec]
    dataset = Dataset("hand", Path("."), queries, gallery, {"all": truths}, protocol="patterncom")
    return dataset, [row for _, _, row in spec]


def longhand_summary(dataset: Dataset, rows: list[list[int]], ap: str) -> dict[str, float]:
    """Label -> mAP in percent: pairs rounded, attributes averaged and rounded, then the mean."""
    pairs = defaultdict(list)
    for record, truth, row in zip(dataset.queries, dataset.truth["all"], rows):
        if len(truth.positives) or ap == "reference":
            pairs[record.group].append(percent(longhand_ap(row, truth.positives.tolist())))
    attributes = {group: two_decimals(np.mean(values)) for group, values in pairs.items()}
    return {"all": two_decimals(np.mean(list(attributes.values()))), **{f"all/{g}": v for g, v in attributes.items()}}


@pytest.mark.parametrize("ap", ["standard", "reference"])
def test_per_attribute_map_with_the_reference_rounding(ap):
    dataset, rows = hand_made()
    result = get_protocol("patterncom")(ranking_for(dataset, rows), dataset, ap=ap)
    expected = longhand_summary(dataset, rows, ap)
    assert {label: values["mAP"] * 100 for label, values in result.summary.items()} == pytest.approx(expected, abs=1e-9)
    assert result.summary["all/color"]["mAP"] * 100 == pytest.approx(55.55, abs=1e-9)  # not 55.56
    shape = 50.0 if ap == "standard" else 25.0
    assert result.summary["all/shape"]["mAP"] * 100 == pytest.approx(shape, abs=1e-9)
    average = {"standard": 57.41, "reference": 49.07}[ap]  # (55.55 + shape + 66.67) / 3, rounded
    assert result.summary["all"]["mAP"] * 100 == pytest.approx(average, abs=1e-9)
    assert result.counts["all/shape"] == {"n_queries": 2, "n_queries_without_positives": 1}
    column = result.per_query["ap"].to_numpy() * 100
    assert np.isnan(column[4]) == (ap == "standard")
    assert column[1] == pytest.approx(33.33, abs=1e-9)


def test_rounding_lands_where_python_rounds_halves():
    """Two attributes at 55.55 and 50.00: their mean 52.775 is stored as a binary number just
    off the half, and the overall value goes the way Python's round takes it."""
    dataset, rows = hand_made()
    keep = [0, 1, 2, 3]
    dataset = Dataset("hand", Path("."), [dataset.queries[i] for i in keep], dataset.gallery,
                      {"all": [dataset.truth["all"][i] for i in keep]}, protocol="patterncom")
    rows = [rows[i] for i in keep]
    result = get_protocol("patterncom")(ranking_for(dataset, rows), dataset)
    assert result.summary["all"]["mAP"] * 100 == pytest.approx(round((55.55 + 50.0) / 2, 2), abs=1e-9)
    assert result.summary["all"]["mAP"] * 100 == pytest.approx(longhand_summary(dataset, rows, "standard")["all"], abs=1e-9)


def test_order_is_scored_as_given_and_repeats_follow_the_mode():
    dataset, rows = hand_made()
    swapped = [list(row) for row in rows]
    swapped[0][:2] = swapped[0][1], swapped[0][0]  # tied scores, other order: rank 2 now
    result = get_protocol("patterncom")(ranking_for(dataset, swapped), dataset)
    assert result.per_query["ap"][0] * 100 == pytest.approx(50.0, abs=1e-9)
    repeated = [list(row) for row in rows]
    repeated[5] = [3, 0, 3, 1, 2, 4]  # a positive returned twice, the other at rank 6
    standard = get_protocol("patterncom")(ranking_for(dataset, repeated), dataset)
    reference = get_protocol("patterncom")(ranking_for(dataset, repeated), dataset, ap="reference")
    assert standard.per_query["ap"][5] * 100 == pytest.approx(percent((1 + 2 / 5) / 2), abs=1e-9)
    assert reference.per_query["ap"][5] * 100 == pytest.approx(percent((1 + 2 / 3 + 3 / 6) / 3), abs=1e-9)
    with pytest.raises(ValueError, match=r"^dataset.protocol_options.ap=fyn is not valid: choose standard or reference$"):
        get_protocol("patterncom")(ranking_for(dataset, rows), dataset, ap="fyn")


def test_end_to_end_on_the_miniature_set(tmp_path):
    root = tmp_path / "PatternNet"
    make_patterncom(root)
    dataset = load_dataset("patterncom", root=root)
    rng = np.random.default_rng(0)
    rows = [rng.permutation(len(dataset.gallery)).tolist() for _ in dataset.queries]
    path = ranking_for(dataset, rows).save(tmp_path / "ranking.npz")
    run = run_evaluate(tmp_path, "patterncom", f"dataset.root='{root}'", f"eval.ranking='{path}'")
    metrics = json.loads((run / "metrics.json").read_text())
    expected = longhand_summary(dataset, rows, "standard")
    assert set(metrics["summary"]) == {"all", *(f"all/{a}" for a in ATTRIBUTE_CSV)}
    assert {label: values["mAP"] * 100 for label, values in metrics["summary"].items()} == pytest.approx(expected, abs=1e-9)
    assert metrics["counts"]["all/shape"]["n_queries_without_positives"] == 4
    per_query = pd.read_csv(run / "per_query.csv")
    assert len(per_query) == len(dataset.queries) and set(per_query["group"]) == set(ATTRIBUTE_CSV)
