"""run_all.sh's closing summary: which files, which directions, the notebooks — read from outputs only."""

from pathlib import Path

from encnet.report.summary import direction_lines, profile_outputs, summary


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_summary_reads_each_profiles_directions_and_marks_gaps_inside_the_seed_spread(tmp_path):
    header = "claim,reported_gap,reproduced_gap,holds"
    write(tmp_path / "tables/ablation_demo_directions.csv",
          f"{header}\nEncNet > FCN (mIoU),7.6,17.29,True\nEncNet > EncNet w/o SE-loss (mIoU),1.0,-0.5,False\n")
    write(tmp_path / "tables/cifar10_demo_directions.csv",
          f"{header},spread\nEncNet < SE-ResNet (test error),,0.5,True,5.66\n")
    write(tmp_path / "tables/ablation_directions.csv", f"{header}\nEncNet > FCN (mIoU),7.6,,\n")  # paper, not run
    write(tmp_path / "tables/ablation_demo.md", "# demo\n")
    write(tmp_path / "figures/se_weight.png", "paper figure")

    demo = direction_lines(tmp_path, "demo")
    assert len(demo) == 3
    assert demo[0].strip().startswith("reproduced") and "+17.29" in demo[0] and "paper +7.60" in demo[0]
    assert demo[1].strip().startswith("NOT reproduced")
    assert "inconclusive" in demo[2] and demo[2].strip().startswith("reproduced")
    paper = direction_lines(tmp_path, "paper")
    assert len(paper) == 1 and paper[0].strip().startswith("not run")

    names = [p.name for p in profile_outputs(tmp_path, "demo")]
    assert "ablation_demo.md" in names and "se_weight.png" not in names and "ablation_directions.csv" not in names
    text = summary(tmp_path, "demo", since=0.0, elapsed=125.0)
    assert "2.1 min" in text and "jupyter lab notebooks/failure_cases.ipynb" in text
