"""Tables rendered from records: the cell rules, determinism, tables-check, record errors."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import tables
from benchmarks.demo_table import render_demo
from benchmarks.plots import PLOT_DIR
from benchmarks.render import load_suite
from runtime.records import RecordError

from .factory import blocks, record, write, write_raw

REPO = Path(__file__).resolve().parents[2]
D1, D2, D3 = "2026-11-20T10:00:00+00:00", "2026-11-21T10:00:00+00:00", "2026-11-22T10:00:00+00:00"


def row(md: str, first_cells: str) -> str:
    """The first table line of ``md`` that starts with ``| first_cells``."""
    for line in md.splitlines():
        if line.startswith("| " + first_cells):
            return line
    raise AssertionError(f"no row starting {first_cells!r}")


def cols(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


@pytest.fixture
def recs(tmp_path: Path) -> Path:
    """Full, partial-only, duplicate, extra and missing cells, plus COCO and demo records."""
    root = tmp_path / "records"
    cmd = "make imagenet-deit_small-w4a4"
    write(root, record("imagenet", "deit_small", "fp", None, {"top1": 79.86, "top5": 95.0}, command=cmd))
    write(root, record("imagenet", "deit_small", "repq+qwt", 4, {"top1": 71.32, "top5": 90.1,
                                                                   "agreement_fp": 80.0, "kl_fp": 0.25},
                       command=cmd, blocks=blocks()))
    # partial only
    write(root, record("imagenet", "deit_small", "repq", 4, {"top1": 68.0}, images=1000, partial=True,
                       command="make imagenet-deit_small-w4a4 VAL_LIMIT=1000"))
    # duplicates: older full, newer full (wins), newest partial
    for date, top1, partial in ((D1, 60.0, False), (D2, 61.04, False), (D3, 99.0, True)):
        write(root, record("imagenet", "deit_tiny", "repq+qwt", 4, {"top1": top1}, date=date, partial=partial,
                           images=500 if partial else 50000, command="make imagenet-deit_tiny-w4a4"))
    # not in the paper table
    write(root, record("imagenet", "deit_small", "repq", 3, {"top1": 20.0}, command="qwt-classify --w-bits 3"))
    write(root, record("coco", "mask_rcnn_swin_t", "repq+qwt", 4, {"bbox_mAP": 36.44, "segm_mAP": 36.06},
                       images=5000, command="make coco-mask_rcnn_swin_t-w4a4", blocks=blocks(3)))
    for seed, top1 in enumerate((90.0, 92.0, 94.0)):
        write(root, record("demo", "demo_vit", "repq+qwt", 4, {"top1": top1, "kl_fp": 0.01 * (seed + 1)},
                           seed=seed, images=360, command="make demo"))
    write(root, record("demo", "demo_vit", "repq+qwt", 4, {"top1": 50.0}, seed=0, date="2026-11-19T00:00:00+00:00",
                       images=360, command="make demo"))  # an older run of seed 0: superseded
    write(root, record("demo", "demo_vit", "fp", None, {"top1": 97.0}, seed=0, images=360, command="make demo"))
    return root


def test_cells_full_partial_duplicate_missing(recs: Path) -> None:
    md = tables.render_markdown(recs)
    imagenet = md["imagenet.md"]
    paper, rest = imagenet.split("## Every run")
    # full: value, footnote, Δ against the paper (71.32 - 71.5)
    r = cols(row(imagenet, "DeiT-S"))
    assert r[0] == "DeiT-S" and r[1] == "79.9" and r[2].startswith("79.9 [") and r[3] == "+0.0"
    qwt = cols([l for l in imagenet.splitlines() if "71.3 [" in l][0])
    assert qwt[4] == "RepQ-ViT + QwT" and qwt[6] == "71.5" and qwt[7] == "-0.2"
    # partial only: the cell stays "not run" and points to the partial run, listed apart, never compared
    assert r[4] == "RepQ-ViT" and r[5] == "not run: `make imagenet-deit_small-w4a4` (1 partial/custom run below)"
    assert r[7] == "—" and "68.0" not in paper
    custom = rest.split("## Partial and custom runs")[1]
    assert re.search(r"\| deit_small \| repq \| W4/A4 \| partial \(1000 of 50000 images\) \| 68\.00 .*\| 1000 \|",
                     custom)
    # duplicates: the newest full run wins; the newer partial run does not hide it and is listed apart
    tiny = cols([l for l in imagenet.splitlines() if "61.0 [" in l][0])
    assert "(newest of 2 runs)" in tiny[5] and tiny[7] == "-0.4"
    assert "99.0" not in paper
    assert re.search(r"\| deit_tiny \| repq\+qwt \| W4/A4 \| partial \(500 of 50000 images\) \| 99\.00 ", custom)
    # missing: not run + the target
    assert cols(row(imagenet, "DeiT-B"))[5] == "not run: `make imagenet-deit_base-w4a4`"
    assert cols(row(imagenet, "DeiT-S"))[8] == "not run: `make imagenet-deit_small-w6a6`"
    assert "Percentile (strict)" in imagenet and "not run: `make imagenet-resnet18-strict-w4a4`" in imagenet
    # every run (paper-cell runs), including the one outside the paper table
    every = rest.split("## Partial and custom runs")[0]
    assert re.search(r"\| deit_small \| repq \| W3/A3 \| 20\.00 .*\| no \|", every)
    assert re.search(r"\| deit_tiny \| repq\+qwt \| W4/A4 \| 61\.04 .*\| 2 \| yes \|", every)
    # provenance footnotes: images, date, commit, command; one note per invocation
    prov = imagenet.split("## Provenance")[1]
    assert re.search(r"- \[\d\] 50000 images; 2026-11-20; commit `abc1234`; `make imagenet-deit_small-w4a4`", prov)
    assert prov.count("`make imagenet-deit_small-w4a4`") == 1  # fp and repq+qwt: one invocation, one note
    assert "**partial run** (`--val-limit`): 1000 images" in prov
    # COCO: box / mask, Δ per metric, the other tables' values
    coco = md["coco.md"]
    line = cols([l for l in coco.splitlines() if "36.4 / 36.1 [" in l][0])
    assert line[4] == "RepQ-ViT + QwT" and line[6] == "36.3 / 36.0" and line[7] == "+0.1 / +0.1"
    assert "RepQ-ViT: 44.2 / 40.2" in coco and "APHQ-ViT: 38.9 / 38.1" in coco
    # plots are linked
    assert f"({PLOT_DIR}/imagenet__deit_small__repq_plus_qwt__w4a4.png)" in imagenet


def test_tiny_folder_run_is_never_a_paper_cell(tmp_path: Path) -> None:
    """The issue's probe: a 16-image, 4-class folder with random weights, no --val-limit. Its record
    says what it evaluated; it is listed as a custom run and neither hides nor is hidden by the real one."""
    root = tmp_path / "records"
    cmd = "qwt-classify --model deit_tiny --random-init --data-dir tiny"
    write(root, record("imagenet", "deit_tiny", "fp", None, {"top1": 0.0, "top5": 25.0}, images=16, classes=4,
                       config={"pretrained": False}, command=cmd, date=D3))
    md = tables.render_markdown(root)["imagenet.md"]
    paper, rest = md.split("## Partial and custom runs")
    fp_cell = cols(row(md, "DeiT-T"))[2]
    assert fp_cell == "not run: `make imagenet-deit_tiny-w4a4` (1 partial/custom run below)" and "-72.2" not in md
    assert re.search(r"\| deit_tiny \| fp \| FP \| custom data \(16 images, 4 classes; not ImageNet val\); "
                     r"pretrained=False \| 0\.00 \| 25\.00 \| 16 \| 4 \| 1 \|", rest)
    # a later (or earlier) real run fills the cell; the custom run stays listed
    write(root, record("imagenet", "deit_tiny", "fp", None, {"top1": 72.14, "top5": 91.1}, date=D1,
                       command="make imagenet-deit_tiny-w4a4"))
    md = tables.render_markdown(root)["imagenet.md"]
    assert cols(row(md, "DeiT-T"))[2].startswith("72.1 [") and cols(row(md, "DeiT-T"))[3] == "-0.1"
    assert "| deit_tiny | fp | FP | custom data (16 images, 4 classes" in md.split("## Partial and custom runs")[1]


def test_demo_mean_std_over_seeds(recs: Path, tmp_path: Path) -> None:
    out = render_demo(recs, tmp_path / "out" / "demo.md")
    md = out.read_text()
    r = cols(row(md, "RepQ-ViT + QwT"))
    assert r[1] == "W4/A4" and r[2] == "3; newest of 4 runs" and r[3] == "92.00 ± 2.00"
    assert r[4] == "0.0200 ± 0.0100"
    assert cols(row(md, "FP"))[2:4] == ["1", "97.00"]
    assert "## demo_vit" in md and "- [1] 360 images" in md


def test_demo_partial_and_detection_metrics(tmp_path: Path) -> None:
    root = tmp_path / "records"
    for seed in (0, 1):
        write(root, record("demo", "demo_mask_rcnn_swin", "repq+qwt", 3,
                           {"bbox_mAP": 40.0 + seed, "segm_mAP": 30.0, "feature_err": 0.5, "bbox_mAP_l": 0.0,
                            "bbox_mAP_50": 70.0},
                           seed=seed, images=20, partial=True, command="make demo DEMO_ARGS=--test-limit 20",
                           blocks=blocks(2), metrics_absent=["bbox_mAP_l"]))
    out = render_demo(root, tmp_path / "out" / "demo.md")
    md = out.read_text()
    header = cols(row(md, "Method"))
    # the columns a reader compares; AP50 and the size buckets stay in the records
    assert header == ["Method", "Bits", "seeds", "bbox_mAP", "segm_mAP", "feature_err", "note"]
    r = cols(row(md, "RepQ-ViT + QwT"))
    assert r[1:5] == ["W3/A3", "2 (partial)", "*40.50 ± 0.71*", "*30.00 ± 0.00*"]
    assert "**partial run** (`--val-limit`): 20 images" in md
    assert (tmp_path / "out" / PLOT_DIR / "demo__demo_mask_rcnn_swin__repq_plus_qwt__w3a3.png").exists()


def test_demo_absent_metric_is_absent_not_zero(tmp_path: Path) -> None:
    from benchmarks.demo_table import demo_table
    from benchmarks.render import Footnotes

    recs = [record("demo", "demo_det", "fp", None, {"bbox_mAP": 60.0, "segm_mAP": 0.0, "feature_err": 0.1},
                   seed=s, images=100, metrics_absent=["segm_mAP"]) for s in (0, 1)]
    table = demo_table(recs, "demo_det", Footnotes())
    assert table.loc[0, "segm_mAP"] == "absent" and table.loc[0, "bbox_mAP"] == "60.00 ± 0.00"
    # one seed absent, one present: the mean is over the seeds that have it
    recs[1] = record("demo", "demo_det", "fp", None, {"bbox_mAP": 60.0, "segm_mAP": 50.0, "feature_err": 0.1},
                     seed=1, images=100)
    assert demo_table(recs, "demo_det", Footnotes()).loc[0, "segm_mAP"] == "50.00"


def test_demo_seed_by_seed_verdict_and_plots_follow_the_table(tmp_path: Path) -> None:
    """The seed-by-seed comparison printed by `make demo` is in results/demo.md, from the same
    records the table averages; the plot averages the same seeds (an older run of a seed is not drawn)."""
    from benchmarks.demo_table import qwt_effect
    from benchmarks.plots import plot_jobs

    root = tmp_path / "records"
    for seed, (kl_b, kl_q) in enumerate(((0.10, 0.05), (0.20, 0.30))):
        write(root, record("demo", "demo_vit", "repq", 4, {"top1": 90.0, "kl_fp": kl_b}, seed=seed, images=60))
        write(root, record("demo", "demo_vit", "repq+qwt", 4, {"top1": 91.0 + seed, "kl_fp": kl_q}, seed=seed,
                           images=60, blocks=blocks(3)))
    write(root, record("demo", "demo_vit", "repq+qwt", 4, {"top1": 10.0, "kl_fp": 9.0}, seed=0, images=60,
                       date="2026-11-01T00:00:00+00:00", blocks=blocks(5)))  # superseded run of seed 0
    lines = qwt_effect(load_suite(root, "demo"))
    assert lines == ["demo_vit W4/A4, RepQ-ViT + QwT vs RepQ-ViT (seeds 0, 1): KL(FP‖Q) -50 %, +50 % "
                     "(lower in 1 of 2 seeds); top-1 +1.00, +2.00"]
    md = render_demo(root, tmp_path / "out" / "demo.md").read_text()
    assert "## QwT against its baseline, seed by seed" in md and f"- {lines[0]}" in md
    (job,) = plot_jobs("demo", load_suite(root, "demo"))
    assert sorted(r["seed"] for r in job.records) == [0, 1] and all(len(r["blocks"]) == 3 for r in job.records)
    assert "seeds 0, 1" in job.label and f"]({PLOT_DIR}/{job.name})" in md


def test_empty_records_render_not_run(tmp_path: Path) -> None:
    md = tables.render_markdown(tmp_path / "none")
    assert md["imagenet.md"].count("not run: `make imagenet-") == 13 + 13 * 4 + 3 * 4
    # 5 paper detectors x 5 cells + 3 mmdet model-zoo detectors x 5 cells beyond the paper
    assert md["coco.md"].count("not run: `make coco-") == 5 * 5 + 3 * 5
    assert "Not run: no demo records yet. Run `make demo`." in md["demo.md"]


def test_render_deterministic_and_idempotent(recs: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    written = tables.render(recs, a)
    names = {p.name for p in written}
    assert {"imagenet.md", "coco.md", "demo.md", "imagenet__deit_small__repq_plus_qwt__w4a4.png",
            "coco__mask_rcnn_swin_t__repq_plus_qwt__w4a4.png"} <= names
    tables.render(recs, b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert tables.render(recs, a) == []  # nothing changes on a second render
    assert tables.check(recs, a) == []
    # a stale plot (its record gone) is removed
    (a / PLOT_DIR / "imagenet__old__repq_plus_qwt__w4a4.png").write_bytes(b"x")
    tables.render(recs, a)
    assert not (a / PLOT_DIR / "imagenet__old__repq_plus_qwt__w4a4.png").exists()


def _make(target: str, records: Path, results: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), target,
                           f"RECORDS={records}", f"RESULTS={results}"],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_tables_check_detects_hand_edit(recs: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    r = _make("tables", recs, out)
    assert r.returncode == 0, r.stderr
    assert (out / "imagenet.md").exists() and (out / PLOT_DIR).is_dir()
    r = _make("tables-check", recs, out)
    assert r.returncode == 0, r.stderr
    md = out / "imagenet.md"
    md.write_text(md.read_text().replace("71.3 [", "75.0 ["))  # a hand edit
    r = _make("tables-check", recs, out)
    assert r.returncode != 0
    assert f"{md}: differs from the records" in r.stderr
    assert re.search(r"^-\|.*75\.0 \[", r.stderr, re.M) and re.search(r"^\+\|.*71\.3 \[", r.stderr, re.M)
    r = _make("tables", recs, out)  # re-rendering repairs it
    assert r.returncode == 0 and _make("tables-check", recs, out).returncode == 0
    write(recs, record("imagenet", "vit_base", "repq", 6, {"top1": 83.0}))  # a new record: stale table
    r = _make("tables-check", recs, out)
    assert r.returncode != 0 and "imagenet.md: differs" in r.stderr


@pytest.mark.parametrize("obj, message", [
    ({"schema": "qwt-record/0"}, "unknown schema 'qwt-record/0'"),
    ("missing", "missing fields"),
    ("[not json", "not valid JSON"),
    ("no_top1", "metrics lack ['top1']"),
    ("wrong_suite", "lies in the 'imagenet' folder"),
])
def test_bad_records_name_the_file(tmp_path: Path, obj, message: str) -> None:
    root = tmp_path / "records"
    good = record("imagenet", "deit_small", "repq", 4, {"top1": 1.0})
    if obj == "missing":
        obj = {k: v for k, v in good.items() if k not in ("images", "metrics")}
    elif obj == "no_top1":
        obj = {**good, "metrics": {"top5": 1.0}}
    elif obj == "wrong_suite":
        obj = {**good, "suite": "coco"}
    if obj == "[not json":
        path = root / "imagenet" / "broken.json"
        path.parent.mkdir(parents=True)
        path.write_text(obj)
    else:
        path = write_raw(root, "imagenet", "broken.json", obj)
    with pytest.raises(RecordError) as err:
        tables.render_markdown(root)
    assert str(path) in str(err.value) and message in str(err.value)
    # the CLI reports it as one clear line and exits 2
    assert tables.main(["render", "--records", str(root), "--out", str(tmp_path / "out")]) == 2


def test_committed_tables_are_current() -> None:
    """results/*.md in the repo match a fresh render of results/records (`make tables-check`)."""
    assert tables.check(REPO / "results" / "records", REPO / "results") == []


def test_beyond_paper_section_holds_the_model_zoo_rows(tmp_path: Path) -> None:
    """mmdet model-zoo detectors: their own section, no paper columns; a box-only detector's
    record (no segm metrics) is valid and shows "—" for AP mask."""
    root = tmp_path / "records"
    write(root, record("coco", "retinanet_r50_fpn_1x", "percentile", 4, {"bbox_mAP": 30.04}, images=5000,
                       command="make coco-retinanet_r50_fpn_1x-w4a4"))
    write(root, record("coco", "mask_rcnn_r50_fpn_1x", "fp", None, {"bbox_mAP": 38.21, "segm_mAP": 34.66},
                       images=5000, command="make coco-mask_rcnn_r50_fpn_1x-w4a4"))
    coco = tables.render_markdown(root)["coco.md"]
    paper, beyond = coco.split("## Beyond the paper: mmdet model-zoo detectors")
    assert "R50" not in paper.split("## Every run")[0] and "(mmdet)" not in paper.split("## Every run")[0]
    section = beyond.split("\n## ")[0]
    head = cols(next(line for line in section.splitlines() if line.startswith("| Model")))
    assert not any("paper" in c or "Δ" in c for c in head)
    line = cols(row(section, "RetinaNet + R50-FPN 1x (mmdet)"))
    assert line[head.index("Method")] == "Percentile"
    assert line[head.index("W4/A4 ours")].startswith("30.0 / —")
    assert line[head.index("W6/A6 ours")] == "not run: `make coco-retinanet_r50_fpn_1x-w6a6`"
    assert cols(row(section, "Mask RCNN + R50-FPN 1x (mmdet)"))[head.index("FP ours")].startswith("38.2 / 34.7")
    assert "not run: `make coco-mmdet_mask_rcnn_swin_t_3x-w4a4`" in section
