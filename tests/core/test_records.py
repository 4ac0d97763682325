"""runtime.records: the layer below the pipelines; provenance of a clean tree. (The layers are
import-linter contracts in pyproject.toml, checked by ``lint-imports`` in ``make test``.)"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from runtime.records import dataset_entry, git_info, make_record, write_record

REPO = Path(__file__).resolve().parents[2]


def test_dataset_entry_names_the_benchmark_split() -> None:
    assert dataset_entry("imagenet", "/d", "val", 50_000, 1_000)["benchmark"] == "ImageNet val"
    assert dataset_entry("imagenet", "/d", "val", 16, 4)["benchmark"] is None
    assert dataset_entry("imagenet", "/d", "val", 50_000, 1_000, class_subset=True)["benchmark"] is None
    assert dataset_entry("coco", "/d", "test", 5_000, 80)["benchmark"] == "COCO val2017"
    assert dataset_entry("demo", "/d", "val", 600, 10)["benchmark"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_generated_results_do_not_make_the_tree_dirty(tmp_path: Path) -> None:
    """`make demo` replaces committed records and re-renders results/demo.md while it runs: its
    later records must still say the tree is clean (only code changes make it dirty)."""
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "records" / "demo").mkdir(parents=True)
    (tmp_path / "results" / "demo.md").write_text("table\n")
    (tmp_path / "results" / "records" / "demo" / "old.json").write_text("{}\n")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    sha, dirty = git_info(tmp_path)
    assert len(sha) == 40 and not dirty
    (tmp_path / "results" / "records" / "demo" / "old.json").unlink()  # replaced by a new run
    (tmp_path / "results" / "records" / "demo" / "new.json").write_text("{}\n")
    (tmp_path / "results" / "demo.md").write_text("table, re-rendered\n")
    assert git_info(tmp_path) == (sha, False)
    sub = tmp_path / "results"  # also when asked from inside results/
    assert git_info(sub) == (sha, False)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_info(tmp_path) == (sha, True)


def test_write_record_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.records as records_mod

    rec = make_record(suite="demo", model="m", method="fp", w_bits=None, a_bits=None, metrics={"top1": 1.0},
                      images=1, partial=False, seed=0, config={}, dataset=dataset_entry("demo", None, "val", 1, 1))
    path = write_record(rec, tmp_path)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_record(rec, tmp_path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no .tmp, no second record
