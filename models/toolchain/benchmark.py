"""Throughput of OpenVINO IRs, measured by OpenVINO's own ``benchmark_app``.

``benchmark_app`` ships with the ``openvino`` wheel. It is run once per IR, one after
the other, in throughput mode on the CPU, with the input reshaped to a static
``[1, 3, H, W]``; its reported frames per second are kept.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from segbatch import defaults
from segbatch.workers.model import INFERENCE_PRECISION

logger = logging.getLogger(__name__)

_THROUGHPUT_LINE = re.compile(r"Throughput:\s*([0-9.]+)\s*FPS")
# benchmark_app's start-up (reading, compiling) comes on top of the measured time.
_START_UP_ALLOWANCE_S = 120


@dataclass(frozen=True)
class Throughput:
    """Frames per second of each IR, measured in one sitting on one machine."""

    fps: dict[str, float]
    duration_s: int
    device: str
    cpu: str
    cpu_count: int

    def ratio(self, numerator: str, denominator: str) -> float:
        return self.fps[numerator] / self.fps[denominator]


def measure_throughput(
    ir_paths: Mapping[str, Path],
    input_size_hw: tuple[int, int],
    *,
    duration_s: int = defaults.BENCHMARK_DURATION_S,
    device: str = "CPU",
) -> Throughput:
    """Run ``benchmark_app`` on each ``label -> model.xml``, in the order given."""
    fps = {
        label: _run_benchmark_app(xml, input_size_hw, duration_s, device)
        for label, xml in ir_paths.items()
    }
    return Throughput(
        fps=fps,
        duration_s=duration_s,
        device=device,
        cpu=_device_name(device),
        cpu_count=os.cpu_count() or 1,
    )


def _device_name(device: str) -> str:
    """The full name OpenVINO gives the device (the CPU model for ``CPU``)."""
    import openvino as ov

    try:
        return str(ov.Core().get_property(device, "FULL_DEVICE_NAME"))
    except RuntimeError:
        return platform.processor() or platform.machine()


def _run_benchmark_app(
    xml_path: Path, input_size_hw: tuple[int, int], duration_s: int, device: str
) -> float:
    height, width = input_size_hw
    command = [
        *_benchmark_app_command(),
        "-m", str(xml_path),
        "-d", device,
        "-hint", "throughput",
        "-infer_precision", INFERENCE_PRECISION,  # as the workers compute
        "-t", str(duration_s),
        "-shape", f"[1,3,{height},{width}]",
    ]  # fmt: skip
    logger.info("benchmarking %s for %d s", xml_path, duration_s)
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=duration_s + _START_UP_ALLOWANCE_S,
        check=False,
    )
    match = _THROUGHPUT_LINE.search(completed.stdout)
    if completed.returncode != 0 or match is None:
        tail = (completed.stdout + completed.stderr)[-2000:]
        raise RuntimeError(
            f"expected benchmark_app to report a throughput for {xml_path}, "
            f"it exited with {completed.returncode}:\n{tail}"
        )
    fps = float(match.group(1))
    logger.info("%s: %.1f FPS", xml_path, fps)
    return fps


def _benchmark_app_command() -> list[str]:
    """``benchmark_app`` of this interpreter's environment, or its module."""
    script = Path(sys.executable).parent / "benchmark_app"
    if script.is_file():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "from openvino.tools.benchmark.main import main; main()",
    ]
