"""The transcribed numbers (the QwT paper's in benchmarks/registry.py, the other papers' in
benchmarks/paper_values.py) match the seed READMEs' markdown tables."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import paper_values as pv
from benchmarks import registry

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / ".." / "shared" / "seeds"
pytestmark_seeds = pytest.mark.skipif(
    not SEEDS.is_dir(), reason=f"seed READMEs not found at {SEEDS} (../shared/seeds beside the repo); "
                               "the transcription cannot be checked against them here")

Key = tuple  # (model, method, w_bits, a_bits, metric)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace(" w. ", " "))


def _model(suite: str, text: str) -> str:
    name = _norm(re.sub(r"\(.*?\)", "", text))
    names = {_norm(m.display if suite == "imagenet" else m.name): m.name for m in registry.models(suite)}
    assert name in names, f"seed model {text!r} matches no registry model"
    return names[name]


def _method(text: str) -> str:
    inverse = {v: k for k, v in registry.METHOD_LABELS.items()}
    assert text in inverse, f"seed method {text!r} has no registry method"
    return inverse[text]


def _bits(prec: str) -> int:
    w, a = re.fullmatch(r"W(\d)/A(\d)", prec).groups()
    assert w == a
    return int(w)


def _nums(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", text)]


def tables(seed: str) -> list[list[list[str]]]:
    """Every markdown table of a seed file as rows of stripped cells (header and rule dropped)."""
    out, cur = [], []
    for line in (SEEDS / seed).read_text(encoding="utf-8", errors="replace").splitlines() + [""]:
        if line.strip().startswith("|"):
            cur.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif cur:
            out.append(cur)
            cur = []
    return [[r for r in t[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)] for t in out]


def _with_prec(seed: str) -> list[list[str]]:
    found = [t for t in tables(seed) if any("W4/A4" in c for r in t for c in r)]
    assert len(found) == 1, f"{seed}: expected one results table, found {len(found)}"
    return found[0]


def parse_qwt(seed: str, suite: str) -> dict[Key, float]:
    """QwT tables (002, 000): Model (FP) | Method | Prec. | value | Prec. | value."""
    metrics = registry.SUITE_METRICS[suite]
    out: dict[Key, float] = {}
    model = None
    for row in _with_prec(seed):
        if row[0]:
            model = _model(suite, row[0])
            fp = _nums(re.search(r"\((.*?)\)", row[0]).group(1))
            out.update({(model, "fp", None, None, m): v for m, v in zip(metrics, fp)})
        method = _method(row[1])
        for prec, val in ((row[2], row[3]), (row[4], row[5])):
            b = _bits(prec)
            out.update({(model, method, b, b, m): v for m, v in zip(metrics, _nums(val))})
    return out


def parse_repq_coco() -> dict[Key, float]:
    """seed 003: Model (FP) | Prec. | box / mask, model cell blank on continuation rows."""
    metrics = registry.SUITE_METRICS["coco"]
    out: dict[Key, float] = {}
    model = None
    for row in _with_prec(pv.REPQ_COCO):
        if row[0]:
            model = _model("coco", row[0])
            out.update({(model, "fp", None, None, m): v
                        for m, v in zip(metrics, _nums(re.search(r"\((.*?)\)", row[0]).group(1)))})
        b = _bits(row[1])
        out.update({(model, "repq", b, b, m): v for m, v in zip(metrics, _nums(row[2]))})
    return out


def parse_aphq_coco() -> dict[Key, float]:
    """seed 004: Model | Full Prec. | MLP Recon. (not transcribed) | W4/A4 (APHQ-ViT)."""
    metrics = registry.SUITE_METRICS["coco"]
    table = [t for t in tables(pv.APHQ_COCO) if any("Swin" in r[0] for r in t)]
    assert len(table) == 1
    out: dict[Key, float] = {}
    for row in table[0]:
        model = _model("coco", row[0])
        out.update({(model, "fp", None, None, m): v for m, v in zip(metrics, _nums(row[1]))})
        out.update({(model, "aphq", 4, 4, m): v for m, v in zip(metrics, _nums(row[3]))})
    return out


def transcribed(seed: str) -> dict[Key, float]:
    return {(v.model, v.method, v.w_bits, v.a_bits, v.metric): v.value for v in registry.PAPER_VALUES if v.seed == seed}


@pytestmark_seeds
@pytest.mark.parametrize("seed", pv.SEED_FILES)
def test_transcription_matches_seed(seed: str) -> None:
    assert (SEEDS / seed).exists(), f"{seed} is named in benchmarks/paper_values.py but not in {SEEDS}"
    parsed = {pv.QWT_IMAGENET: lambda: parse_qwt(pv.QWT_IMAGENET, "imagenet"),
              pv.QWT_COCO: lambda: parse_qwt(pv.QWT_COCO, "coco"),
              pv.REPQ_COCO: parse_repq_coco, pv.APHQ_COCO: parse_aphq_coco}[seed]()
    ours = transcribed(seed)
    assert ours.keys() == parsed.keys(), (sorted(set(ours) ^ set(parsed), key=str))
    wrong = {k: (ours[k], parsed[k]) for k in ours if ours[k] != parsed[k]}
    assert not wrong, f"transcribed != {seed}: {wrong}"


def test_registry_covers_every_paper_row() -> None:
    for v in registry.PAPER_VALUES:
        if v.source != "QwT":
            continue
        exp = registry.get(v.suite, v.model, v.method, v.w_bits, v.a_bits)
        assert exp.paper[v.metric] == v.value and exp.target
        assert v.seed in exp.seeds
    # 13 models x (fp + 4 paper cells) + ResNet strict rows; 5 detectors x 5 + 4 APHQ rows
    assert len(registry.experiments("imagenet")) == 13 * 5 + 3 * 4
    assert len(registry.experiments("coco")) == 5 * 5 + 4


def test_reference_fp_agrees_with_qwt() -> None:
    """RepQ-ViT's and APHQ-ViT's FP columns are the same checkpoints as QwT's."""
    for e in registry.experiments("coco"):
        if e.method == "fp":
            for src, vals in e.refs.items():
                assert vals == e.paper, (e.model, src)


def test_registry_targets_and_errors() -> None:
    assert registry.get("imagenet", "resnet50", "percentile_strict+qwt", 6, 6).target == "imagenet-resnet50-strict-w6a6"
    assert registry.get("coco", "cascade_mask_rcnn_swin_b", "repq", 4, 4).target == "coco-cascade_mask_rcnn_swin_b-w4a4"
    assert (registry.get("coco", "mask_rcnn_swin_s", "repq", 4, 4).refs
            == {"RepQ-ViT": {"bbox_mAP": 44.2, "segm_mAP": 40.2}})
    with pytest.raises(KeyError, match="models: .*deit_small"):
        registry.get("imagenet", "deit_huge", "repq", 4, 4)
