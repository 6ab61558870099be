"""Print the HTML document to PDF with headless Chromium (Debian's ``chromium``; ``make browser`` installs it)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from vigil.report.sources import ReportError


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def html_to_pdf(html: str, target: Path, timeout_s: float = 120.0) -> None:
    """Write ``html`` as a PDF at ``target``; raises ReportError when Chromium is missing or fails."""
    browser = chromium()
    if browser is None:
        raise ReportError("chromium is not installed (make browser, or apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="vigil-report-") as scratch:
        page = Path(scratch) / "pack.html"
        page.write_text(html, encoding="utf-8")
        command = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={scratch}/profile",
            f"--print-to-pdf={target.resolve()}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ReportError(f"chromium did not print the PDF within {timeout_s:.0f} s") from exc
    if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        raise ReportError(f"chromium could not print the PDF (exit {done.returncode}): {done.stderr.strip()[-300:]}")
