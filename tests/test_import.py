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


def test_the_public_names_are_the_defining_modules_objects_imported_on_first_use():
    probe = imported_after("encnet")
    assert [m for m in probe["modules"] if m.startswith("encnet.")] == []  # `import encnet` imports no submodule
    import encnet
    from encnet.engine.published_weights import load_published
    from encnet.losses import SegmentationLoss
    from encnet.metrics import SegmentationMetric
    from encnet.models.segmentation import build_model
    from encnet.nn.encoding import Encoding
    from encnet.nn.heads import EncModule

    expected = {"build_model": build_model, "Encoding": Encoding, "EncModule": EncModule,
                "SegmentationLoss": SegmentationLoss, "SegmentationMetric": SegmentationMetric,
                "load_published": load_published}
    assert sorted(encnet.__all__) == sorted(expected) and set(expected) <= set(dir(encnet))
    for name, obj in expected.items():
        assert getattr(encnet, name) is obj
    from encnet import metrics  # a submodule named like no public name still imports as one

    assert metrics.SegmentationMetric is SegmentationMetric
    try:
        encnet.no_such_name
    except AttributeError as err:
        assert "no_such_name" in str(err)
    else:
        raise AssertionError("an unknown attribute of encnet must raise AttributeError")
