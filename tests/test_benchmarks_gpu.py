"""`benchmarks.gpu` runs for real in its CPU variant (`--device cpu --quick`) and reports every section with figures,
so the GPU check cannot rot between the rare runs on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.gpu import SECTIONS, flatten
from conftest import REPO

GPU_ONLY = {"gpu_busy", "gpu_utilization_nvml", "peak_gpu_gib", "gpu_frames_per_s", "differing_frames"}  # None on a CPU
NUMBERS = {
    "train": ("default.steps_per_s", "default.real_frames_per_s", "default.data_wait_share", "large.steps_per_s",
              "large.real_frames_per_s", "large.data_wait_share"),
    "precision": ("32-true.val_loss", "bf16-mixed.val_loss", "32-true.codebook_utilization",
                  "bf16-mixed.codebook_utilization", "bf16_speedup", "utilization_gap_points"),
    "ddp": ("last_ckpt_step", "max_weight_difference"),
    "encode": ("poses", "frames", "cpu_frames_per_s"),
    "compile": ("eager_steps_per_s", "compiled_steps_per_s", "speedup", "first_step_s"),
}


@pytest.mark.slow  # every section for real: ~40 s
def test_the_quick_cpu_run_reports_every_section_with_its_figures(tmp_path):
    output = tmp_path / "gpu.json"
    command = [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--quick", "--output", str(output)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert "GPU figures: missing" in result.stdout and report["note"].startswith("GPU figures: missing")
    assert list(report["sections"]) == list(SECTIONS) == list(NUMBERS)
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section["status"])
        figures = dict(flatten(section["figures"]))
        for key in NUMBERS[name]:
            assert isinstance(figures[key], (int, float)) and figures[key] == figures[key], (name, key, figures[key])
        assert all(figures[key] is None for key in figures if key.rsplit(".", 1)[-1] in GPU_ONLY), (name, figures)
        assert f"{name:<10} status" in result.stdout, "the table names every section"

    precision, ddp, compiled = (report["sections"][name]["figures"] for name in ("precision", "ddp", "compile"))
    assert precision["32-true"]["codes_in_range"] and precision["bf16-mixed"]["codes_in_range"]
    assert ddp["process_group"] == "gloo", "sign-vq train under torchrun ran DDP"
    assert ddp["resumed"] and ddp["last_ckpt_step"] == ddp["signal_at_step"] + 1
    assert ddp["same_weights"], "the run stopped by SIGTERM and resumed ends with the uninterrupted run's weights"
    assert compiled["works"] and compiled["graph_breaks"] == 0
