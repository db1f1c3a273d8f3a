"""The README's picture of the web app: the text-to-audio tab after one request, as a small PNG.

    python benchmarks/serve_screenshot.py [--model tiny] [-o benchmarks/serve-main-tab.png]

Starts ``audioldm serve`` on a free loopback port, fills the form in Debian's headless Chromium
(Playwright), waits for the result, screenshots the page and reduces it to a 64-colour palette.
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "serve-main-tab.png")
    args = ap.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "audioldm_core.cli", "serve", "--model", args.model,
                             "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(360):
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 1500})
            page.goto(url)
            page.fill("#text-prompt textarea", "a dog barking in a park, birds singing")
            page.fill("#text-negative textarea", "low quality")
            page.fill("#text-seconds input", "5")
            page.fill("#text-seed input", "42")
            page.click("#text-run")
            page.wait_for_function("() => { const e = document.querySelector('#text-command textarea');"
                                   " return e && e.value.includes('--seed 42'); }", timeout=600_000)
            time.sleep(1.0)
            png = page.screenshot(full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(args.output, optimize=True)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB, {img.width}x{img.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
