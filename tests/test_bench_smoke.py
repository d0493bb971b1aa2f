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

import pandas as pd
import pytest
import torch

from encnet.nn.encoding import Encoding
from encnet.report.benchmarks import build_benchmarks_markdown, load_results, main as report_main, rows_frame

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


def test_a_rows_own_matmul_rate_is_not_overwritten_by_the_machine_probe():
    # model_overhead rows carry the matrix-product rate timed in their own rounds; the table once showed the
    # start/end probe in its place, so a row's achieved / matmul ratio could not be read from the table.
    machine = {"device_name": "cpu", "matmul_GFLOP_s_at_start": 123.9, "matmul_GFLOP_s_at_end": 133.0}
    result = {"device": "cpu", "machine": machine,
              "rows": [{"model": "fcn", "matmul_GFLOP_s": 93.3}, {"model": "other"}]}
    frame = rows_frame(result)
    assert frame.loc[0, "matmul_GFLOP_s"] == 93.3 and frame.loc[0, "matmul_probe_GFLOP_s"] == "124–133"
    assert pd.isna(frame.loc[1, "matmul_GFLOP_s"]) and frame.loc[1, "matmul_probe_GFLOP_s"] == "124–133"
    assert rows_frame({**result, "rows": [{"model": "other"}]}).loc[0, "matmul_GFLOP_s"] == "124–133"


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


# ------------------------------------------------- issue 37: ratios paired by round, contenders taken in turns


def _load_bench_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interleaved_times_takes_the_contenders_in_turns_and_paired_ratio_pairs_rounds():
    """Without a shuffle seed the call order is a, b, c per round after the warm-up (not every a then every b);
    the ratio is the median over rounds of each round's median a / median b, worked by hand on given times (none
    are measured here)."""
    common = _load_bench_common()
    order = []
    fns = {name: (lambda name=name: order.append(name)) for name in "abc"}
    times = common.interleaved_times(fns, torch.device("cpu"), rounds=3, min_round_time=0.0, warmup=1,
                                     shuffle_seed=None)
    assert order == list("abc") * 4  # one warm-up call each, then three rounds in turns
    assert [len(times[n]) for n in "abc"] == [3, 3, 3] and all(len(calls) == 1 for n in "abc" for calls in times[n])
    # rounds: a/b = 2/1, median(4, 6)/2 = 2.5, 3/6 = 0.5 -> median 2; the ratio of the medians would be 3.5/2
    given = {"a": [[2.0], [4.0, 6.0], [3.0]], "b": [[1.0], [2.0], [6.0]]}
    ratio = common.paired_ratio(given, "a", "b")
    assert ratio["median_s"] == pytest.approx(2.0) and ratio["repeats"] == 3
    assert (ratio["q25_s"], ratio["q75_s"]) == (pytest.approx(1.25), pytest.approx(2.25))


def test_interleaved_times_with_a_shuffle_seed_takes_each_round_in_its_own_seeded_order():
    """The warm-up keeps the given order; each round is a permutation of the contenders, the orders vary between
    rounds (a fixed order would favour a position), and the same seed gives the same orders."""
    common = _load_bench_common()

    def orders(seed):
        order = []
        fns = {name: (lambda name=name: order.append(name)) for name in "abcd"}
        times = common.interleaved_times(fns, torch.device("cpu"), rounds=6, min_round_time=0.0, warmup=1,
                                         shuffle_seed=seed)
        assert all(len(times[n]) == 6 for n in "abcd")
        return order

    first = orders(0)
    assert first[:4] == list("abcd")
    rounds = [first[4 + 4 * r: 8 + 4 * r] for r in range(6)]
    assert all(sorted(r) == list("abcd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1 and len({r[0] for r in rounds}) > 1
    assert orders(0) == first
    # the default is seeded too: every benchmark's rounds are shuffled unless a caller asks otherwise
    default = []
    common.interleaved_times({n: (lambda n=n: default.append(n)) for n in "abcd"}, torch.device("cpu"), rounds=6,
                             min_round_time=0.0, warmup=1)
    assert default == first


# ------------------------------------------- issue 16: the data pipeline and the GPU suite, --quick on the CPU


@pytest.fixture(scope="module")
def perf_results(tmp_path_factory) -> Path:
    """bench/data_pipeline.py --quick and bash bench/gpu_suite.sh --quick, side by side, into one folder."""
    out = tmp_path_factory.mktemp("perf_results")
    commands = {
        "data_pipeline": [sys.executable, str(BENCH / "data_pipeline.py"), "--quick", "--results-dir", str(out)],
        "gpu_suite": ["bash", str(BENCH / "gpu_suite.sh"), "--quick", "--results-dir", str(out)],
    }
    procs = {name: subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, cmd in commands.items()}
    failures = []
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=400)
        if proc.returncode != 0:
            failures.append(f"{name} --quick exited {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    assert not failures, "\n\n".join(failures)
    return out


def test_data_pipeline_quick(perf_results):
    record = read(perf_results, "data_pipeline")
    assert record["quick"] is True and MACHINE_KEYS <= record["machine"].keys()
    assert [r["path"] for r in record["rows"]] == ["pil", "pil+v2", "torchvision+v2"]
    assert all(r["images_per_s_per_worker"] > 0 for r in record["rows"])
    assert record["equality"]["decode_max_abs_diff"] == 0 and record["equality"]["sample_max_abs_diff"] == 0
    assert record["fastest_equal_path"] in ("pil+v2", "torchvision+v2")
    estimates = record["tables"][0]["rows"]
    assert estimates and all(r["kind"].startswith("ESTIMATE") and r["workers_per_gpu"] >= 1 for r in estimates)
    assert all(t["pass"] for t in record["targets"])


def test_gpu_suite_quick(perf_results):
    step = read(perf_results, "train_step")
    settings = {(r["model"], r["precision"], r["channels_last"]) for r in step["rows"]}
    assert settings == {(m, p, c) for m in ("fcn", "encnet") for p in ("fp32", "bf16") for c in (False, True)}
    assert all(r["step_s"] > 0 for r in step["rows"]) and not step["skipped"]
    enc = read(perf_results, "encoding_amp")
    assert {(r["impl"], r["precision"]) for r in enc["rows"]} == {
        (i, p) for i in ("ours", "naive", "floor") for p in ("fp32", "bf16")}
    syncbn = {r["tensors"]: r for r in read(perf_results, "syncbn_cuda")["rows"]}
    assert syncbn["cuda:0"]["note"] == "n/a (no CUDA)"
    errors = [v for k, v in syncbn["cpu"].items() if k.startswith("max_abs_error")]
    assert len(errors) == 4 and max(errors) < 1e-4
    training = read(perf_results, "paper_training")
    assert training["rows"][-1]["iterations"] == 2 and training["rows"][-1]["images_per_s"] > 0
    # Quick CPU runs never reach the tables.
    text = build_benchmarks_markdown(load_results(perf_results))
    assert "## train_step" not in text and "quick-run result(s) left out" in text


# ------------------------------------------------------------ issue 37: the suite against the peers, --smoke


@pytest.mark.peers
def test_peers_benchmark_smoke(tmp_path):
    """bench/peers.py --smoke: every part against both peers, ratios from real timings, the protocols' argmax equal
    to the peers' own (MultiEvalModule, predict + merge_preds), and the result kept out of the tables."""
    if not (REPO / ".peers" / "site" / "mmseg").is_dir():
        pytest.skip("the peers' released code is not installed: run `bash scripts/install_peers.sh`")
    proc = subprocess.run([sys.executable, str(BENCH / "peers.py"), "--smoke", "--device", "cpu", "--results-dir",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    record = read(tmp_path, "peers")
    assert record["quick"] is True and record["sizes"] == "smoke" and MACHINE_KEYS <= record["machine"].keys()
    assert record["machine"]["matmul_GFLOP_s_at_start"] > 0 and record["machine"]["matmul_GFLOP_s_at_end"] > 0
    parts = {(r["part"], r["peer"]) for r in record["rows"]}
    assert parts == {(p, peer) for p in ("train_step", "peak_memory", "eval_forward", "ms_release", "ms_mmseg",
                                         "transform") for peer in ("authors v0.5.0", "mmseg 1.2.2")
                     if (p, peer) not in {("ms_release", "mmseg 1.2.2"), ("ms_mmseg", "authors v0.5.0")}}
    for row in record["rows"]:
        assert row["suite"] > 0 and row["peer_value"] > 0
        assert row["ratio"] == pytest.approx(row["suite"] / row["peer_value"])
    checks = {t["target"]: t["pass"] for t in record["targets"] if "argmax" in t["target"]}
    assert len(checks) == 2 and all(checks.values()), checks
    text = build_benchmarks_markdown(load_results(tmp_path))
    assert "## peers" not in text and "1 quick-run result(s) left out" in text


def test_peers_benchmark_without_the_peers_says_how_to_install_them(tmp_path):
    """A checkout without .peers/: the benchmark names the install command and exits 0 (what gpu_suite relies on)."""
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("peers.py", "common.py"):
        (bench / name).write_text((BENCH / name).read_text())
    proc = subprocess.run([sys.executable, str(bench / "peers.py"), "--quick"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bash scripts/install_peers.sh" in proc.stdout and not list(bench.glob("results/*"))
