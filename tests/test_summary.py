"""run_all.sh's closing summary: which files, which directions, the notebooks — read from outputs only."""

from pathlib import Path

from encnet.experiments.summary import direction_lines, matmul_gflops, profile_outputs, reported_lines, summary


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


HEADER = "claim,metric,reported_gap,reproduced_gap,ci_low,ci_high,n_pairs,interval,controls_min,verdict,note"


def test_summary_lists_each_profiles_directions_with_interval_and_verdict(tmp_path):
    write(tmp_path / "tables/ablation_demo_directions.csv",
          f"{HEADER}\nEncNet > FCN (mIoU),mIoU,7.6,17.29,12.0,22.5,5,paired t,80.0,reproduced,\n"
          "EncNet > EncNet w/o SE-loss (mIoU),mIoU,1.0,-0.5,-3.0,2.0,5,paired t,80.0,inconclusive,\n")
    write(tmp_path / "tables/cifar10_demo_directions.csv",
          f"{HEADER}\nEncNet < SE-ResNet (test error),error,,-2.0,-3.0,-1.0,5,paired t,,contradicted,\n")
    write(tmp_path / "tables/ablation_directions.csv",
          f"{HEADER}\nEncNet > FCN (mIoU),mIoU,7.6,,,,0,paired t,,not run,no seed ran in both arms\n")  # paper
    write(tmp_path / "tables/ablation_demo.md", "# demo\n")
    write(tmp_path / "figures/se_weight.png", "paper figure")

    demo = direction_lines(tmp_path, "demo")
    assert len(demo) == 3
    assert demo[0].strip().startswith("reproduced") and "+17.29 [+12.00, +22.50]" in demo[0]
    assert "paper +7.60" in demo[0]
    assert demo[1].strip().startswith("inconclusive") and "-0.50 [-3.00, +2.00]" in demo[1]
    assert demo[2].strip().startswith("contradicted")
    paper = direction_lines(tmp_path, "paper")
    assert len(paper) == 1 and paper[0].strip().startswith("not run") and "no seed ran" in paper[0]

    names = [p.name for p in profile_outputs(tmp_path, "demo")]
    assert "ablation_demo.md" in names and "se_weight.png" not in names and "ablation_directions.csv" not in names
    text = summary(tmp_path, "demo", since=0.0, elapsed=125.0, gflops=12.34)
    assert "2.1 min" in text and "12.3 GFLOP/s" in text and "jupyter lab notebooks/failure_cases.ipynb" in text


def test_paper_summary_lists_each_number_against_the_reported_one(tmp_path):
    write(tmp_path / "tables/ablation.csv",
          "row,metric,reported,reported_text,verified,reproduced_mean,reproduced_std,n,ci_half_width,delta,"
          "vs_reported,status,runs\n"
          "EncNet,mIoU,49.2,49.2,yes,49.5,0.3,3,0.75,0.3,within,ok,r\n"
          "FCN,mIoU,41.0,41.0,yes,39.0,0.3,3,0.75,-2.0,below,ok,r\n"
          "EncNet R101,mIoU,51.7,51.7,yes,,,0,,,,not run,\n")
    lines = reported_lines(tmp_path, "paper")
    assert len(lines) == 2
    assert lines[0].strip().startswith("within") and "tolerance ±0.75" in lines[0]
    assert lines[1].strip().startswith("below") and "Δ -2.00" in lines[1] and "tolerance ±0.75" in lines[1]
    assert reported_lines(tmp_path, "demo") == []
    assert "reproduced against reported" in summary(tmp_path, "paper", since=0.0, elapsed=None)


def test_matmul_speed_is_a_positive_rate():
    assert matmul_gflops(size=64, repeats=2) > 0
