"""What a labeler sees: a pushed pair in Label Studio's labeling page, saved as docs/label-studio.png.

Not part of CI (it needs a browser). Run with the Label Studio venv, which has the SDK, after
installing Selenium there and Debian's ``chromium`` and ``chromium-driver``:

    .venv-labelstudio/bin/pip install selenium
    .venv-labelstudio/bin/python docs/label_studio_screenshot.py

It starts Label Studio on a free port in a temp dir, creates a project with activedpo's pairwise
interface, imports one task as ``LabelStudioProject.push`` does, signs in through the login form
and screenshots the task's labeling page in headless Chromium.
"""

from __future__ import annotations

import ast
import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EMAIL, PASSWORD = "labeler@example.com", "activedpo-docs-" + secrets.token_hex(4)


def label_config() -> str:
    """activedpo's pairwise interface, read from the client's source (this venv does not have the package)."""
    tree = ast.parse((ROOT / "client" / "activedpo_client" / "labelfiles.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LABEL_CONFIG":
            return ast.literal_eval(node.value)
    raise RuntimeError("LABEL_CONFIG not found")


def main() -> None:
    from label_studio_sdk import LabelStudio
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    data = Path(tempfile.mkdtemp(prefix="ls-docs-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(20)
    env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(data), LABEL_STUDIO_USERNAME=EMAIL,
               LABEL_STUDIO_PASSWORD=PASSWORD, LABEL_STUDIO_USER_TOKEN=token)  # fmt: skip
    binary = Path(os.environ.get("ACTIVEDPO_LABEL_STUDIO", ROOT / ".venv-labelstudio" / "bin" / "label-studio"))
    proc = subprocess.Popen([str(binary), "start", "--no-browser", "--port", str(port), "--host", "127.0.0.1",
                             "--enable-legacy-api-token"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        ls = LabelStudio(base_url=url, api_key=token)
        project = ls.projects.create(title="activedpo: which response is better?", label_config=label_config())
        task = {
            "pair_id": "p-3f9c2a81d07b64e5",
            "prompt": "Explain in two sentences why the sky is blue.",
            "response_a": "Sunlight scatters off air molecules, and shorter blue wavelengths scatter far more "
            "than red ones (Rayleigh scattering). So blue light reaches our eyes from every part of the sky.",
            "response_b": "The sky is blue because it reflects the ocean. On cloudy days it looks grey because "
            "the clouds block that reflection.",
            "rank": 0,
            "activedpo_batch": "run-docs-round-1",
        }
        task_id = ls.projects.import_tasks(id=project.id, request=[task], return_task_ids=True).task_ids[0]
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(f"{url}/user/login")
            driver.find_element(By.NAME, "email").send_keys(EMAIL)
            driver.find_element(By.NAME, "password").send_keys(PASSWORD)
            driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
            time.sleep(3)
            driver.get(f"{url}/projects/{project.id}/data?task={task_id}")
            time.sleep(8)  # the labeling interface loads its bundle after the page
            out = ROOT / "docs" / "label-studio.png"
            driver.save_screenshot(str(out))
            print(f"wrote {out}")
        finally:
            driver.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
