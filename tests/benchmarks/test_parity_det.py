"""``make parity-det``: input errors, name and layout mapping, the verdicts.

Without the reference these test the command line and the comparison logic. With it
(``QWT_DET_REF=/path/to/QwT-det-RepQ-ViT``) the real tool runs end to end on a tiny Swin
(``swin_micro``, about a minute) and must pass; a perturbed stage and the classification
reference's log-sqrt(2) floor put back into detection must each fail.
"""
from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.parity_det import run as det_run
from benchmarks.parity_det.compare import named_plan_row, outputs_row

REPO = Path(__file__).resolve().parents[2]
REF = os.environ.get("QWT_DET_REF", "")
needs_ref = pytest.mark.skipif(not REF or not Path(REF, "tools/test.py").is_file(),
                               reason="set QWT_DET_REF=/path/to/QwT-det-RepQ-ViT to run the released reference")
MICRO = ["--archs", "swin_micro", "--det-size", "64x96", "--n-qwt", "8", "--batch-size", "4"]


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = det_run.main(args)
    return code, capsys.readouterr().out.strip().splitlines()


# ------------------------------------------------------------------------------ bad input
def test_without_ref_one_line(capsys) -> None:
    code, lines = cli([], capsys)
    assert code == 2 and lines == [det_run.NEEDS_REF]
    assert "QwT-det-RepQ-ViT" in lines[0] and "8be76ac" in lines[0]


def test_ref_that_is_not_the_reference(tmp_path, capsys) -> None:
    code, lines = cli(["--ref", str(tmp_path)], capsys)
    assert code == 2 and len(lines) == 1 and "is not QwT-det-RepQ-ViT (no mmdet/models/backbones" in lines[0]
    code, lines = cli(["--ref", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and len(lines) == 1 and "is not a folder" in lines[0]


@pytest.mark.parametrize("args, says", [
    (["--det-size", "224x224"], "multiple of the window"),
    (["--det-size", "big"], "is not HxW"),
    (["--archs", "swin_b"], "unknown backbone swin_b"),
    (["--n-qwt", "10", "--batch-size", "4"], "multiple of --batch-size"),
    (["--a-bits", "9"], "bit widths must be 2..8"),
    (["--start-block", "x"], "is not an integer or a comma list"),
])
def test_bad_options_one_line(args, says, tmp_path, capsys) -> None:
    fake = tmp_path / "ref"
    for f in ("mmdet/models/backbones/swin_transformer.py", "tools/quant/__init__.py", "tools/quant/quant_model.py",
              "tools/quant/quant_modules.py", "tools/quant/quantizer.py", "tools/test.py"):
        (fake / f).parent.mkdir(parents=True, exist_ok=True)
        (fake / f).write_text("")
    code, lines = cli(["--ref", str(fake), *args], capsys)
    assert code == 2 and len(lines) == 1 and says in lines[0]


def test_make_parity_det_without_ref() -> None:
    proc = subprocess.run(["make", "-s", "parity-det", "REF="], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "parity-det: needs REF=<path to QwT-det-RepQ-ViT>" in proc.stderr


# ------------------------------------------------------------------------------ names and layouts
@pytest.mark.parametrize("fork, suite", [
    ("patch_embed.proj", "patch_embed.projection"),
    ("layers.0.blocks.1.attn.qkv", "stages.0.blocks.1.attn.w_msa.qkv"),
    ("layers.2.blocks.5.attn.matmul2", "stages.2.blocks.5.attn.w_msa.matmul2"),
    ("layers.1.blocks.0.mlp.fc1", "stages.1.blocks.0.ffn.layers.0.0"),
    ("layers.1.blocks.0.mlp.fc2", "stages.1.blocks.0.ffn.layers.1"),
    ("layers.1.blocks.0.norm2", "stages.1.blocks.0.norm2"),
    ("layers.0.downsample.reduction", "stages.0.downsample.reduction"),
    ("norm3", "norm3"),
])
def test_fork_names_in_mmdet3(fork, suite) -> None:
    from benchmarks.parity_det.suite import suite_name
    assert suite_name(fork) == suite


def test_align_permutes_patch_merging_as_the_checkpoint_conversion() -> None:
    """The reduction's channel-wise input range and the reparameterized norm / reduction follow
    detection.convert's unfold order, the order the suite's loaded weights have."""
    from benchmarks.parity_det.suite import align
    from detection.convert import convert_legacy

    c, o = 8, 6
    g = torch.Generator().manual_seed(0)
    nw, nb, w, s = (torch.randn(4 * c, generator=g), torch.randn(4 * c, generator=g),
                    torch.randn(o, 4 * c, generator=g), torch.rand(4 * c, generator=g))
    rec = {"kind": "linear", "quantizers": {
        "input": {"n_bits": 4, "channel_wise": True, "delta": s.view(1, 1, -1), "zero_point": s.view(1, 1, -1) * 2},
        "weight": {"n_bits": 4, "channel_wise": True, "delta": torch.ones(o, 1), "zero_point": torch.ones(o, 1)}}}
    dump = {"quant_initial": {"layers.0.downsample.reduction": rec}, "quant_final": {},
            "reparam": {"layers.0.downsample.reduction": {
                "norm": "layers.0.downsample.norm", "s": s, "z": s * 2, "s_t": s.mean(), "z_t": s.mean(),
                "norm_weight": nw, "norm_bias": nb, "weight": w, "bias": torch.zeros(o)}},
            "repq_state_dict": {"layers.0.downsample.norm.weight": nw, "layers.0.downsample.reduction.weight": w,
                                "layers.0.downsample.reduction.bias": torch.arange(o, dtype=torch.float)},
            "qwt": [], "outputs": {}}
    out = align(dump)
    conv = convert_legacy({"backbone.stages.0.downsample.norm.weight": s,
                           "backbone.layers.0.downsample.norm.weight": nw,
                           "backbone.layers.0.downsample.reduction.weight": w})
    r = out["reparam"]["stages.0.downsample.reduction"]
    assert r["norm"] == "stages.0.downsample.norm"
    assert torch.equal(r["norm_weight"], conv["backbone.stages.0.downsample.norm.weight"])
    assert torch.equal(r["weight"], conv["backbone.stages.0.downsample.reduction.weight"])
    perm_s = convert_legacy({"backbone.layers.0.downsample.norm.weight": s})["backbone.stages.0.downsample.norm.weight"]
    assert torch.equal(r["s"], perm_s)
    q = out["quant_initial"]["stages.0.downsample.reduction"]["quantizers"]
    assert torch.equal(q["input"]["delta"], perm_s) and torch.equal(q["weight"]["delta"], torch.ones(o, 1))
    sd = out["repq_state_dict"]
    assert torch.equal(sd["stages.0.downsample.reduction.bias"], torch.arange(o, dtype=torch.float))
    assert torch.equal(sd["stages.0.downsample.reduction.weight"], r["weight"])


def test_rows_decide() -> None:
    a = [torch.randn(1, 4, 5, 6), torch.randn(1, 8, 3, 3)]
    assert outputs_row("x", a, a, 1e-5).verdict == "PASS"
    b = [a[0], a[1] * (1 + 1e-3)]
    row = outputs_row("x", b, a, 1e-5)
    assert row.verdict == "FAIL" and "1:1.00e-03" in row.detail
    assert outputs_row("x", a[:1], a, 1e-5).verdict == "FAIL"  # a stage missing
    plan = {"patch_embed.projection": (4, 8, False), "stages.0.blocks.0.attn.w_msa.qkv": (4, 4, True)}
    assert named_plan_row("plan", plan, dict(plan)).verdict == "PASS"
    row = named_plan_row("plan", plan, {**plan, "patch_embed.projection": (4, 4, False)})
    assert row.verdict == "FAIL" and "patch_embed.projection" in row.detail
    assert named_plan_row("plan", {}, {}).verdict == "FAIL"


# ------------------------------------------------------------------------------ the released reference
@pytest.fixture()
def one_thread():
    """Both sides at one thread, as the tool runs them (the QwT rows re-solve the reference's fp32
    system, whose sums depend on the thread count)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def micro_dump(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("det_dumps")
    args = det_run.parse_args(["--ref", REF, *MICRO, "--w-bits", "6", "--a-bits", "6"])
    skel = None
    code = det_run.run_reference(args, Path(REF).resolve(), "swin_micro", (64, 96), skel, out / "micro.pt", [0])
    assert code is None, code
    return out / "micro.pt"


@needs_ref
def test_parity_det_with_the_released_reference(capsys) -> None:
    code, lines = cli(["--ref", REF, *MICRO, "--start-block", "0,3"], capsys)
    assert code == 0, "\n".join(lines)
    assert lines[-1].startswith("parity-det: 0 deciding rows failed of ")
    assert "start_block 0 0/" in lines[-1] and "start_block 3 0/" in lines[-1]


@needs_ref
def test_perturbed_stage_fails_its_row(micro_dump, one_thread) -> None:
    from benchmarks.parity_det.compare import compare
    from benchmarks.parity_det.suite import run_on_dump

    dump = torch.load(micro_dump, weights_only=False)
    bad = copy.deepcopy(dump)
    q = bad["quant_final"]["layers.1.blocks.1.attn.proj"]["quantizers"]["input"]
    q["delta"] = q["delta"] * (1 + 1e-3)
    failed = {r.stage for r in compare(*run_on_dump(bad), None) if r.verdict == "FAIL"}
    assert "quantizers, final, own calibration" in failed, failed


@needs_ref
def test_classification_floor_in_detection_fails_at_a6(micro_dump, monkeypatch, one_thread) -> None:
    """The regression this tool was built for: the 1e-6 log-sqrt(2) floor at A6 is caught."""
    import detection.quantize as dq
    from benchmarks.parity_det.compare import compare
    from benchmarks.parity_det.suite import run_on_dump

    dump = torch.load(micro_dump, weights_only=False)
    assert not [r.stage for r in compare(*run_on_dump(dump), None) if r.verdict == "FAIL"]
    monkeypatch.setattr(dq, "ATTN_RATIO_FLOOR", 1e-6)
    failed = {r.stage for r in compare(*run_on_dump(dump), None) if r.verdict == "FAIL"}
    assert "QwT teacher-forced: rows solved the reference's way" in failed, failed
