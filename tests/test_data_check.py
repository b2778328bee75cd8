"""`gfl-repro data check` and the same check before training: every class of bad COCO data is
one line with its count and first example; no run trains on zero annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from gfl_repro.cli import cli
from gfl_repro.datasets.check import check_dataset, require_usable
from gfl_repro.datasets.coco import read_image
from gfl_repro.datasets.errors import DataError
from gfl_repro.engines import execute
from gfl_repro.specs.catalogue import load_catalogue
from gfl_repro.specs.profiles import PROFILES
from gfl_repro.specs.run_config import run_id

SPLITS = {"train": "train2017", "val": "val2017"}


def make_coco(root: Path, num: dict | None = None, size=(64, 48)) -> Path:
    """A tiny, valid dataset in COCO 2017's layout: one 20 px box per image, two categories."""
    num = num or {"train": 4, "val": 2}
    (root / "annotations").mkdir(parents=True)
    for split, folder in SPLITS.items():
        (root / folder).mkdir()
        images, anns = [], []
        for i in range(1, num[split] + 1):
            name = f"{i:012d}.png"
            Image.new("RGB", size, (20 * i, 120, 60)).save(root / folder / name)
            images.append({"id": i, "file_name": name, "width": size[0], "height": size[1]})
            anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "area": 400.0, "iscrowd": 0})
        write_ann(root, split, {"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]})
    return root


def ann_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"instances_{SPLITS[split]}.json"


def read_ann(root: Path, split: str) -> dict:
    return json.loads(ann_file(root, split).read_text())


def write_ann(root: Path, split: str, data) -> None:
    ann_file(root, split).write_text(json.dumps(data))


def check(root: Path, sample: int = 500):
    return check_dataset(root / "train2017", ann_file(root, "train"), root / "val2017", ann_file(root, "val"),
                         sample=sample)


def _edit(root, split, change):
    data = read_ann(root, split)
    change(data)
    write_ann(root, split, data)


def _truncate(root, split):
    text = ann_file(root, split).read_text()
    ann_file(root, split).write_text(text[: len(text) // 2])


CASES = {
    "truncated json": ("train", _truncate, "not valid JSON (Expecting"),
    "json is a list": ("train", lambda r, s: write_ann(r, s, []), "not a COCO annotation file (a JSON list"),
    "no images key": ("train", lambda r, s: _edit(r, s, lambda d: d.pop("images")), "'images' missing"),
    "bbox as a string": ("train", lambda r, s: _edit(r, s, lambda d: d["annotations"][0].update(bbox="5,5,20,20")),
                         "1 malformed annotations (bbox must be [x, y, width, height] numbers) (first: annotations[0]"),
    "no categories": ("train", lambda r, s: _edit(r, s, lambda d: d.update(categories=[])), "'categories' is empty"),
    "image missing": ("train", lambda r, s: (r / "train2017" / "000000000002.png").unlink(),
                      "1 image files missing (first: "),
    "image corrupt": ("val", lambda r, s: (r / "val2017" / "000000000001.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0"),
                      "1 image files that do not decode (first: "),
    "unknown categories only": ("train", lambda r, s: _edit(r, s, lambda d: [a.update(category_id=99)
                                                                            for a in d["annotations"]]),
                                "no usable training box (4 annotations, 4 images): a run would train on nothing"),
    "empty validation": ("val", lambda r, s: _edit(r, s, lambda d: d.update(annotations=[])),
                         "the validation set has no box (0 annotations, 2 images): AP would be undefined"),
    "val without iscrowd": ("val", lambda r, s: _edit(r, s, lambda d: d["annotations"][1].pop("iscrowd")),
                            "malformed annotations (iscrowd missing (COCOeval reads it))"),
    "categories differ": ("val", lambda r, s: _edit(r, s, lambda d: d["categories"].pop()),
                          "categories differ from"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_class_of_bad_data_is_one_line(tmp_path, case):
    split, damage, fragment = CASES[case]
    root = make_coco(tmp_path / "coco")
    damage(root, split)
    reports = check(root)
    errors = [line for r in reports for line in r.errors]
    assert len(errors) == 1, errors
    assert fragment in errors[0] and "\n" not in errors[0]
    with pytest.raises(DataError) as err:
        require_usable(reports)
    assert fragment in str(err.value) and "gfl-repro data check" in str(err.value)


def test_problems_are_counted_per_class_with_the_first_example(tmp_path):
    root = make_coco(tmp_path / "coco", num={"train": 6, "val": 2})
    for i in (2, 5):
        (root / "train2017" / f"{i:012d}.png").unlink()
    (root / "train2017" / "000000000003.png").write_bytes(b"")

    def damage(data):
        data["annotations"][0]["category_id"] = 42
        data["annotations"][3]["category_id"] = 43
        data["annotations"][5]["bbox"] = [5, 5, 0.5, 20]
    _edit(root, "train", damage)
    train = check(root)[0]
    missing = str(root / "train2017" / "000000000002.png")
    assert train.errors == [
        f"{ann_file(root, 'train')}: 2 image files missing (first: {missing})",
        f"{ann_file(root, 'train')}: 1 image files that do not decode (first: {root / 'train2017' / '000000000003.png'}:"
        + train.errors[1].split("000000000003.png:", 1)[1],
    ]
    assert train.warnings == [
        f"{ann_file(root, 'train')}: 2 annotations with an unknown category_id (skipped) (first: annotation 1, category_id 42)",
        f"{ann_file(root, 'train')}: 1 annotations with a box under 1 px or no area (skipped) (first: annotation 6, "
        "bbox [5, 5, 0.5, 20])",
    ]


def test_big_sets_decode_a_stated_sample(tmp_path):
    root = make_coco(tmp_path / "coco", num={"train": 5, "val": 2})
    train, val = check(root, sample=2)
    assert train.sampled and train.decoded == 2 and "decoded a random sample of 2 of 5 images" in train.summary()
    assert not val.sampled and "decoded all 2 images" in val.summary()
    assert train.boxes == 5 and val.boxes == 2 and train.ok and val.ok


def test_read_image_names_the_file(tmp_path):
    with pytest.raises(DataError, match=f"^{tmp_path / 'gone.png'}: image file missing$"):
        read_image(tmp_path / "gone.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=f"^{tmp_path / 'bad.png'}: cannot decode image"):
        read_image(tmp_path / "bad.png")


def test_a_corrupt_image_read_by_a_loader_worker_is_one_line(tmp_path):
    from gfl_repro.datasets.coco import CocoDetection, build_loader

    root = make_coco(tmp_path / "coco")
    bad = root / "val2017" / "000000000002.png"
    bad.write_bytes(bad.read_bytes()[:60])
    data = CocoDetection(root / "val2017", ann_file(root, "val"), train=False, scale=(64, 48))
    with pytest.raises(DataError) as err:
        list(build_loader(data, batch_size=1, shuffle=False, num_workers=1))
    assert str(err.value).startswith(f"{bad}: cannot decode image") and "\n" not in str(err.value)


def test_worker_tracebacks_are_cut_back_to_the_one_line():
    wrapped = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\ngfl_repro.datasets.errors.DataError: /d/a.png: image file missing\n')
    assert str(DataError(wrapped)) == "/d/a.png: image file missing"


def test_the_engine_checks_before_training(tmp_path):
    root = make_coco(tmp_path / "coco")
    _edit(root, "train", lambda d: [a.update(category_id=99) for a in d["annotations"]])
    exp = load_catalogue()["table3"]
    config = exp.resolve(exp.row("ATSS + QFL + DFL"), PROFILES["smoke"]).replace(
        dataset="coco2017", epochs=1, lr_steps=(1,), batch_size=2)
    with pytest.raises(DataError, match="no usable training box"):
        execute(config, tmp_path / "run", run_id=run_id(config), profile="smoke", data_root=root, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_data_check_cli(tmp_path):
    root = make_coco(tmp_path / "coco")
    ok = CliRunner().invoke(cli, ["data", "check", "--data-root", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "train: " in ok.output and "4 usable boxes; decoded all 4 images" in ok.output and "ok: paper profile" in ok.output
    (root / "val2017" / "000000000002.png").unlink()
    _edit(root, "train", lambda d: d["annotations"][0].update(category_id=7))
    bad = CliRunner().invoke(cli, ["data", "check", "--data-root", str(root)])
    assert bad.exit_code == 2
    lines = bad.output.strip().splitlines()
    assert any(line.startswith("  error: ") and "1 image files missing" in line for line in lines)
    assert any(line.startswith("  warning: ") and "unknown category_id" in line for line in lines)
    assert lines[-1] == "gfl-repro: error: data check: 1 problem(s), listed above; runs refuse this data"
    nowhere = CliRunner().invoke(cli, ["data", "check", "--data-root", str(tmp_path / "nowhere")])
    assert nowhere.exit_code == 2 and nowhere.output.count("\n") == 1 and "COCO 2017 incomplete" in nowhere.output
    mixed = CliRunner().invoke(cli, ["data", "check", "--profile", "smoke", "--data-root", str(root)])
    assert mixed.exit_code == 2 and "--data-root names COCO 2017" in mixed.output
