"""Smoke tests for bench/: each benchmark runs with --quick into a temporary results folder.

The benchmarks' numbers are not tested (they depend on the machine); what is: they run, write the
documented JSON, count what they claim to count, and the naive Encoding they compare against is right.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from encnet.nn.encoding import Encoding
from encnet.report.benchmarks import build_benchmarks_markdown, load_results, main as report_main

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
NAMES = ("encoding_layer", "model_overhead", "syncbn")
MACHINE_KEYS = {"cpu_model", "cpu_cores", "torch_threads", "device_name", "torch", "date", "git_commit"}


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """All three benchmarks with --quick, side by side (most of their time is starting Python and torch)."""
    out = tmp_path_factory.mktemp("bench_results")
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), "--quick", "--device", "cpu", "--results-dir", str(out)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in NAMES
    }
    failures = []
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(f"bench/{name}.py --quick exited {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    assert not failures, "\n\n".join(failures)
    return out


def read(results_dir: Path, name: str) -> dict:
    path = results_dir / f"{name}-cpu.json"
    assert path.is_file(), f"missing {path}; found {sorted(p.name for p in results_dir.iterdir())}"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", NAMES)
def test_results_schema(results_dir, name):
    record = read(results_dir, name)
    assert record["benchmark"] == name and record["device"] == "cpu" and record["quick"] is True
    assert MACHINE_KEYS <= record["machine"].keys()
    assert record["machine"]["device_name"] == "cpu"
    assert record["rows"] and record["targets"] and record["notes"]
    for t in record["targets"]:
        assert {"target", "measured", "threshold", "pass", "note"} <= t.keys()
        assert isinstance(t["pass"], bool) and t["measured"] == t["measured"]  # not NaN


def test_encoding_layer_results(results_dir):
    record = read(results_dir, "encoding_layer")
    assert record["agreement"]["float64_max_rel_error"] < 1e-10
    assert record["agreement"]["float32_max_rel_error"] < 1e-3
    cases = {(c["side"], c["impl"]) for c in record["cases"]}
    assert cases == {(side, impl) for side in record["config"]["sides"] for impl in ("ours", "naive", "floor")}
    for case in record["cases"]:
        assert case["median_s"] > 0 and case["peak_bytes"] >= 0 and case["repeats"] >= 2
    assert [t["target"] for t in record["targets"]] == [
        "speed-up over naive", "peak-memory saving over naive", "time vs matrix-product floor"]


def test_model_overhead_results(results_dir):
    record = read(results_dir, "model_overhead")
    flops, params = record["flops"], record["params"]
    # EncNet is FCN's backbone and aux head plus the Context Encoding Module: strictly more of both.
    assert flops["encnet"]["forward_flops"] > flops["fcn"]["forward_flops"] > 0
    assert flops["encnet"]["train_flops"] > flops["encnet"]["forward_flops"]
    assert params["encnet"] > params["fcn"] > 0
    assert "aten.bmm" in record["config"]["flop_counter_ops"]
    assert record["ratios"]["forward_flops"] == pytest.approx(flops["encnet"]["forward_flops"]
                                                              / flops["fcn"]["forward_flops"])


def test_syncbn_results(results_dir):
    record = read(results_dir, "syncbn")
    rows = {r["variant"]: r for r in record["rows"]}
    # Counted by wrapping torch.distributed: sync once = 1 all-reduce forward + 1 backward; twice = 2 + 2.
    assert rows["once"]["collectives"] == 2 and rows["twice"]["collectives"] == 4
    assert rows["torch"]["collectives"] is None and rows["torch"]["note"].startswith("n/a (CPU)")
    assert rows["once"]["max_abs_error"] < 1e-4 and rows["twice"]["max_abs_error"] < 1e-4
    assert {r["rank"] for r in record["workers"]} == {0, 1}


def test_benchmarks_table(results_dir, tmp_path):
    results = load_results(results_dir)
    assert [r["benchmark"] for r in results] == list(NAMES)
    text = build_benchmarks_markdown(results, include_quick=True)
    for name in NAMES:
        assert f"## {name} (cpu)" in text
    assert "AMD" in text or results[0]["machine"]["cpu_model"] in text
    assert ("PASS" in text or "MISS" in text) and results[0]["machine"]["date"][:10] in text
    # Quick runs are smoke tests, not results: left out of the real table by default.
    report_main(["--results-dir", str(results_dir), "--out", str(tmp_path / "benchmarks.md")])
    default = (tmp_path / "benchmarks.md").read_text()
    assert "## encoding_layer" not in default and "3 quick-run result(s) left out" in default


# ------------------------------------------------------------------ the naive Encoding the bench compares to


def _load_encoding_bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_encoding_layer", BENCH / "encoding_layer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_naive_encoding_matches_formula_and_ours():
    """The bench's naive Encoding against a per-element loop of the paper's formula, and ours against both."""
    bench = _load_encoding_bench()
    torch.manual_seed(0)
    b, d, k, h, w = 2, 5, 3, 2, 3
    x = torch.randn(b, d, h, w, dtype=torch.float64)
    enc = Encoding(d, k).double()
    c, s = enc.codewords.detach(), enc.scale.detach()
    expected = torch.zeros(b, k, d, dtype=torch.float64)
    for bi in range(b):
        xs = x[bi].reshape(d, -1).t()
        for xi in xs:
            logits = torch.stack([s[kk] * ((xi - c[kk]) ** 2).sum() for kk in range(k)])
            a = torch.exp(logits - logits.max())
            a = a / a.sum()
            for kk in range(k):
                expected[bi, kk] += a[kk] * (xi - c[kk])
    with torch.no_grad():
        torch.testing.assert_close(bench.naive_encoding(x, enc.codewords, enc.scale), expected)
        torch.testing.assert_close(enc(x), expected)
