"""Spec loading and validation; every paper cell against an independent transcription."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gfl_repro.specs.catalogue import load_catalogue, select
from gfl_repro.specs.spec import SpecError, load_experiment
from paper_tables import ORDER, PAPER

ALL = ["table1a", "table1b", "table1c", "table2a", "table2b", "table2c", "table3", "table4",
       "fig2", "fig3", "fig5", "fig7", "fig9"]


def test_catalogue_has_all_13_artifacts_in_paper_order(catalogue):
    assert list(catalogue) == ALL
    assert {e.kind for e in catalogue.values()} == {"table", "figure"}


@pytest.mark.parametrize("table", [t for t in ALL if t.startswith("table")])
def test_every_paper_cell_matches_the_transcription(catalogue, table):
    exp = catalogue[table]
    expected = PAPER[table]
    if table == "table4":
        keys = [(r.info["Backbone"], r.label) for r in exp.rows]
    else:
        keys = [(r.group, r.label) for r in exp.rows]
    assert keys == ORDER[table], "rows in printed order"
    for row, key in zip(exp.rows, keys):
        want = expected[key]
        for metric in exp.metrics:
            got = row.paper[metric]
            truth = want["fps"] if (table == "table4" and metric == "FPS") else want[metric]
            if truth is None:
                assert got is None, (table, key, metric)
            else:
                assert got is not None and math.isclose(got, truth), (table, key, metric, got, truth)
        if table == "table4":
            assert row.section == want["section"]
            assert row.info["Epoch"] == str(want["epochs"])
            assert (row.info["MS train"] == "✓") == want["ms_train"]
            assert row.info["Reference"] == want["venue"]
            assert ("FPS" in row.notes) == want["fps_from_sapd"]
            assert row.reference == (row.label != "GFL (ours)")


def test_table4_runs_only_the_five_gfl_rows(catalogue, smoke):
    runs = catalogue["table4"].runs(smoke)
    assert [r.info["Backbone"] for r, _, _ in runs] == ["R-50", "R-101", "X-101-32x4d", "R-101-DCN", "X-101-32x4d-DCN"]
    configs = [c for _, c, _ in runs]
    assert all(c.schedule == "2x" and c.multiscale and c.eval_split == "test-dev" for c in configs)
    assert [c.dcn for c in configs] == [False, False, False, True, True]
    assert len({rid for _, _, rid in runs}) == 5


def test_figures_declare_their_runs_and_artifacts(catalogue, smoke):
    fig2 = catalogue["fig2"]
    assert fig2.artifacts[0].rows == ("IoU-branch", "joint w/ QFL")
    assert catalogue["fig7"].uses == ("table4",)
    fig5 = catalogue["fig5"]
    assert [a.analysis for a in fig5.artifacts] == ["qfl_curves", "distribution_shapes", "regression_targets"]
    assert fig5.runs(smoke) == []  # the assignment histogram needs no training


def _write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_HEAD = '[experiment]\nid = "bad"\nkind = "table"\npaper_ref = "T"\ntitle = "t"\nsplit = "minival"\nrecipe = "gfl"\nmetrics = ["AP"]\n'


@pytest.mark.parametrize(
    "body, fragments",
    [
        ('[[row]]\nlabel = "r1"\noverrides = { reg_maxx = 3 }\npaper = [1.0]\n', ["bad.toml", "'r1'", "overrides.reg_maxx", "unknown setting"]),
        ('[[row]]\nlabel = "r1"\noverrides = { quality = "joint_qfl" }\npaper = [1.0]\n', ["'r1'", "overrides.quality", "must be one of"]),
        ('[[row]]\nlabel = "r1"\npaper = [1.0, 2.0]\n', ["'r1'", "field 'paper'", "needs 1 numbers"]),
        ('[[row]]\nlabel = "r1"\npaper = ["x"]\n', ["'r1'", "paper.AP"]),
        ('[[row]]\nlabel = "r1"\ncolour = "red"\n', ["'r1'", "'colour'", "unknown field"]),
        ('[[row]]\nlabel = "r1"\n[[row]]\nlabel = "r1"\n', ["'r1'", "duplicate"]),
        ('[[row]]\nlabel = "r1"\noverrides = { dcn = "yes" }\n', ["overrides.dcn", "true or false"]),
    ],
)
def test_spec_errors_name_file_row_and_field(tmp_path, body, fragments):
    with pytest.raises(SpecError) as err:
        load_experiment(_write(tmp_path, GOOD_HEAD + body))
    for fragment in fragments:
        assert fragment in str(err.value)


def test_spec_error_for_inconsistent_resolution_names_the_row(tmp_path, smoke):
    exp = load_experiment(_write(tmp_path, GOOD_HEAD + '[[row]]\nlabel = "odd"\noverrides = { cls_loss = "focal" }\n'))
    with pytest.raises(SpecError, match=r"bad.toml, row 'odd': quality = 'joint' needs cls_loss = 'qfl'"):
        exp.runs(smoke)


def test_softmax_loss_only_on_detectors_with_image_major_targets(tmp_path, smoke):
    """SSD's hard negative mining works per image on image-major rows; FCOS's are level-major."""
    row = '[[row]]\nlabel = "odd"\noverrides = { detector = "fcos", quality = "none", cls_loss = "softmax_ce", box = "dirac", dfl_weight = 0 }\n'
    exp = load_experiment(_write(tmp_path, GOOD_HEAD + row))
    with pytest.raises(SpecError, match=r"row 'odd': cls_loss = 'softmax_ce' mines hard negatives per image"):
        exp.runs(smoke)


def test_invalid_toml_and_wrong_id_and_missing_head(tmp_path):
    with pytest.raises(SpecError, match="bad.toml: invalid TOML"):
        load_experiment(_write(tmp_path, "[experiment\n"))
    with pytest.raises(SpecError, match="field 'id'"):
        load_experiment(_write(tmp_path, GOOD_HEAD.replace('id = "bad"', 'id = "other"') + '[[row]]\nlabel="a"\n'))
    with pytest.raises(SpecError, match=r"missing \[experiment\]"):
        load_experiment(_write(tmp_path, '[[row]]\nlabel = "a"\n'))


def test_catalogue_rejects_unknown_uses(tmp_path):
    _write(tmp_path, GOOD_HEAD.replace('kind = "table"', 'kind = "figure"') + 'uses = ["nope"]\n[[artifact]]\nname="a"\nanalysis="qfl_curves"\n')
    with pytest.raises(SpecError, match="uses"):
        load_catalogue(tmp_path)


# ------------------------------------------------------------------ settings out of range (issue: wrong successes)


@pytest.mark.parametrize("override, fragment", [
    ("epochs = 0", "epochs must be >= 1, got 0"),
    ("epochs = -1", "epochs must be >= 1, got -1"),
    ("batch_size = 0", "batch_size must be >= 1"),
    ("base_lr = -0.01", "base_lr must be > 0"),
    ("momentum = 1.0", "momentum must be in [0, 1)"),
    ("weight_decay = -1e-4", "weight_decay must be >= 0"),
    ("warmup_iters = -5", "warmup_iters must be >= 0"),
    ("warmup_ratio = 0.0", "warmup_ratio must be in (0, 1]"),
    ("image_scale = [0, -5]", "image_scale must be two positive pixel sizes"),
    ("image_scale = [1333]", "image_scale must be two positive pixel sizes"),
    ("multiscale_short = [800, 480]", "multiscale_short must be (low, high)"),
    ("score_thr = 5", "score_thr must be in [0, 1), got 5.0"),
    ("nms_iou = -1", "nms_iou must be in (0, 1], got -1.0"),
    ("nms_pre = 0", "nms_pre must be >= 1"),
    ("max_per_img = 0", "max_per_img must be >= 1"),
    ("qfl_beta = -2", "qfl_beta must be >= 0"),
    ("focal_gamma = -1", "focal_gamma must be >= 0"),
    ("focal_alpha = 1.5", "focal_alpha must be in [0, 1]"),
    ("dfl_weight = -0.25", "dfl_weight must be >= 0"),
    ("box_loss_weight = -2", "box_loss_weight must be >= 0"),
    ("reg_max = inf", "reg_max must be a finite number, got inf"),
    ("reg_max = nan", "reg_max must be a finite number, got nan"),
    ("bin_width = 0", "bin_width must be > 0"),
    ("lr_steps = [0]", "lr_steps must be epochs >= 1"),
])
def test_settings_out_of_range_are_refused_when_the_spec_is_read(tmp_path, override, fragment):
    name = override.split(" = ")[0]
    with pytest.raises(SpecError) as err:
        load_experiment(_write(tmp_path, GOOD_HEAD + f'[[row]]\nlabel = "r1"\noverrides = {{ {override} }}\n'))
    message = str(err.value)
    assert message.startswith(f"bad.toml, row 'r1', field 'overrides.{name}': ") and fragment in message
    assert "\n" not in message


def test_resolved_settings_are_checked_together(tmp_path, smoke):
    exp = load_experiment(_write(tmp_path, GOOD_HEAD + '[[row]]\nlabel = "short"\noverrides = { epochs = 2 }\n'))
    with pytest.raises(SpecError, match=r"bad.toml, row 'short': lr_steps must lie within 1..epochs \(2\), got \[8, 11\]"):
        exp.runs(smoke)
    ok = load_experiment(_write(tmp_path, GOOD_HEAD + '[[row]]\nlabel = "ok"\noverrides = { epochs = 1, lr_steps = [1] }\n'))
    assert ok.runs(smoke)[0][1].epochs == 1
    none = load_experiment(_write(tmp_path, GOOD_HEAD + '[[row]]\nlabel = "empty"\noverrides = { synth_train = 0 }\n'))
    with pytest.raises(SpecError, match="synthetic dataset needs synth_train and synth_val >= 1"):
        none.runs(smoke)


ROW = '[[row]]\nlabel = "r1"\n'


@pytest.mark.parametrize("top, body, fragment", [
    ("", ROW + "section = 5\n", "bad.toml, row 'r1', field 'section': must be text, got 5"),
    ("", ROW + 'recipe = ["gfl"]\n', "bad.toml, row 'r1', field 'recipe': unknown recipe ['gfl']"),
    ("", ROW + "paper = [inf]\n", "bad.toml, row 'r1', field 'paper.AP': must be a number"),
    ("", ROW + "info = { n = [1] }\n", "field 'info.n': must be text or a number"),
    ("artifact = [1]\n", ROW, "bad.toml, artifact 1: must be a table, got 1"),
    ('[artifact]\nname = "a"\n', ROW, "bad.toml, field 'artifact': must be an array of tables"),
])
def test_malformed_spec_fields_are_one_line(tmp_path, top, body, fragment):
    head = GOOD_HEAD.replace("metrics", 'info_columns = ["n"]\nmetrics')
    with pytest.raises(SpecError) as err:
        load_experiment(_write(tmp_path, top + head + body))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_non_utf8_spec_names_its_file_and_spares_the_others(tmp_path):
    good = GOOD_HEAD.replace('id = "bad"', 'id = "good"') + '[[row]]\nlabel = "r1"\n'
    _write(tmp_path, good, "good.toml")
    (tmp_path / "broken.toml").write_bytes(b'[experiment]\ntitle = "caf\xe9"\n')
    with pytest.raises(SpecError) as err:
        load_catalogue(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'broken.toml'}: not UTF-8 text (byte 25)")
    assert [e.id for e in select(["good"], tmp_path)] == ["good"]  # a command naming another spec still works


CLAIM_HEAD = GOOD_HEAD + '[[row]]\nlabel = "a"\npaper = [1.0]\n[[row]]\nlabel = "b"\npaper = [2.0]\n'


@pytest.mark.parametrize("claim, fragment", [
    ('kind = "greater"\na = "a"\nb = "c"\n', "bad.toml, claim 1: no row 'c' (rows: a, b)"),
    ('kind = "bigger"\na = "a"\nb = "b"\n', "bad.toml, claim 1, field 'kind': must be one of greater, order, best, flat"),
    ('kind = "greater"\na = "a"\nb = "b"\nmetric = "AP50"\n', "claim 1, field 'metric': 'AP50' is not a metric"),
    ('kind = "flat"\nrows = ["a", "b"]\n', "claim 1, field 'within': must be a positive number"),
    ('kind = "order"\nrows = ["a", "a"]\n', "claim 1: needs at least two different rows"),
    ('kind = "greater"\na = "a"\nb = "b"\nrow = "a"\n', "claim 1, field 'row': unknown field"),
])
def test_claim_errors_name_file_and_claim(tmp_path, claim, fragment):
    with pytest.raises(SpecError) as err:
        load_experiment(_write(tmp_path, CLAIM_HEAD + "[[claim]]\n" + claim))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_every_table_states_its_claims(catalogue):
    for name in ["table1a", "table1b", "table1c", "table2a", "table2b", "table2c", "table3", "table4"]:
        assert catalogue[name].claims, name
    best = catalogue["table1c"].claims[0]
    assert best.kind == "best" and best.rows[0] == "β = 2" and len(best.rows) == 5  # against every other β
    joint = catalogue["table1a"].claims[0]
    assert joint.rows[0] == "FCOS / joint w/ QFL (ours)" and all(r.startswith("FCOS / ") for r in joint.rows)
    assert catalogue["table2b"].claims[0].within == 0.2


def test_rows_sharing_a_label_are_named_by_what_tells_them_apart(catalogue):
    names = [r.display for r in catalogue["table4"].rows]
    assert len(set(names)) == len(names)
    assert "GFL (ours) R-101-DCN" in names and "Libra R-CNN X-101-64x4d" in names and "TSD" in names


def test_seeds_are_part_of_the_run_identity(catalogue, smoke):
    exp = catalogue["table3"]
    one = exp.runs(smoke)
    three = exp.runs(smoke, seeds=3)
    assert len(three) == 3 * len(one) and [c.seed for _, c, _ in three[:3]] == [0, 1, 2]
    assert [rid for _, _, rid in three[::3]] == [rid for _, _, rid in one]  # seed 0 keeps every run id
    assert len({rid for _, _, rid in three}) == 12


def test_a_row_cannot_set_its_seed(tmp_path):
    with pytest.raises(SpecError, match="bad.toml, row 'r', field 'overrides.seed': seeds are chosen on the command"):
        load_experiment(_write(tmp_path, GOOD_HEAD + '[[row]]\nlabel = "r"\noverrides = { seed = 3 }\n'))


def test_select_rows_by_substring(catalogue):
    from gfl_repro.specs.catalogue import NoMatchingRow, select_rows

    chosen = select_rows([catalogue["table1a"], catalogue["table3"]], ["atss / iou-branch"])
    assert [e.id for e in chosen] == ["table1a"] and [r.display for r in chosen[0].rows] == ["ATSS / IoU-branch"]
    assert chosen[0].claims == ()  # the claims need rows that were not selected
    both = select_rows([catalogue["table3"]], ["QFL"])
    assert [r.label for r in both[0].rows] == ["ATSS + QFL", "ATSS + QFL + DFL"]
    assert [c.text for c in both[0].claims] == ["ATSS + QFL + DFL > ATSS + QFL (AP)"]
    with pytest.raises(NoMatchingRow, match="no row matches --row 'GFL R-50'; close: 'GFL \\(ours\\) R-50'"):
        select_rows([catalogue["table4"]], ["GFL R-50"])


def test_a_row_cannot_choose_the_arithmetic(tmp_path):
    for key, value, flag in (("precision", '"bf16"', "precision"), ("channels_last", "true", "channels-last"),
                             ("compile", "true", "compile")):
        row = f'[[row]]\nlabel = "r"\noverrides = {{ {key} = {value} }}\n'
        with pytest.raises(SpecError, match=f"field 'overrides.{key}': {key} is chosen on the command line "
                                            f"\\(gfl-repro --{flag}\\)"):
            load_experiment(_write(tmp_path, GOOD_HEAD + row))
