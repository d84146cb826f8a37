"""`python -m diagnostics.report RUN` on a real run, rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_notebooks import make_run

ROOT = Path(__file__).resolve().parents[1]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed (.ci/run installs it: apt-get install -y chromium)")
    return exe


def browse(exe: str, page: Path, tmp: Path, *flags: str) -> subprocess.CompletedProcess:
    args = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp / 'profile'}",
        *flags,
    ]
    return subprocess.run(
        [*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run("gan", tmp_path_factory.mktemp("report"))


def report_cli(run_dir: Path) -> subprocess.CompletedProcess:
    """The CLI as the README runs it: from the run's parent, with a relative RUN."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "diagnostics.report", run_dir.name],
        cwd=run_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_report_in_browser_shows_verdict_and_skill_table(run_dir, tmp_path):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["skill"] = {
        "step": 4,
        "mse_ratio": 0.75,
        "temperature": {"mse": 0.3, "mse_trilinear": 0.4},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    res = report_cli(run_dir)
    assert res.returncode == 0, res.stderr
    page = run_dir / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing from the network
    exe = chromium()
    dom = browse(exe, page, tmp_path, "--dump-dom").stdout
    verdict = json.loads((run_dir / "health.json").read_text())["verdict"]
    assert verdict.split(":")[0] in dom and 'id="verdict"' in dom
    assert verdict[:60] in dom.replace("&amp;", "&")
    assert '<table id="skill">' in dom and "temperature" in dom and "0.3" in dom and "0.75" in dom
    assert dom.count("data:image/png;base64,") >= 4  # curves, slices, spectra, colorful ...
    shot = tmp_path / "shot.png"
    browse(exe, page, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000")
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB"))
    assert px.shape[:2] == (2000, 1200)
    # not blank: many distinct colours (images drew) and a good share of non-white pixels
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 200
    assert (px.min(axis=2) < 200).mean() > 0.05


def test_report_without_skill_says_so(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("skill", None)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    assert report_cli(run_dir).returncode == 0
    text = (run_dir / "report.html").read_text()
    assert "No skill data" in text and '<table id="skill">' not in text


def test_report_error_names_the_problem(tmp_path):
    res = report_cli(tmp_path / "no_such_run")
    assert res.returncode == 2 and "no_such_run is not a directory" in res.stderr
    (tmp_path / "empty").mkdir()
    res = report_cli(tmp_path / "empty")
    assert res.returncode == 2 and "not a run directory" in res.stderr
