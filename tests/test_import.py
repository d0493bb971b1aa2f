"""`import encnet` is light: no dataset, image or plotting libraries, and no torch settings touched."""

import json
import subprocess
import sys

HEAVY = ("torchvision.datasets", "PIL", "matplotlib", "pandas")

PROBE = """
import json, sys, torch
threads = torch.get_num_threads()
import {modules}
print(json.dumps({{"modules": sorted(sys.modules), "threads_changed": torch.get_num_threads() != threads}}))
"""


def imported_after(modules: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(modules=modules)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def heavy_in(modules) -> list:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_import_encnet_is_light():
    probe = imported_after("encnet")
    assert heavy_in(probe["modules"]) == []
    assert not probe["threads_changed"]


def test_layers_losses_metrics_are_light():
    probe = imported_after("encnet.nn, encnet.losses, encnet.metrics")
    assert heavy_in(probe["modules"]) == []
    assert not probe["threads_changed"]
