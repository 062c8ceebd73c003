"""What a labeler sees: a pushed pair on Label Studio's labeling page, saved as docs/label-studio.png.

Not part of CI (the browser test in tests/integration/test_labelstudio.py drives the same page there).
Run it with the project's venv (which has the SDK and Selenium) after ``make install`` and installing
Debian's ``chromium`` and ``chromium-driver``:

    .venv/bin/python docs/label_studio_screenshot.py

It starts Label Studio (``.venv-labelstudio``) on a free port in a temp dir, creates a project and pushes
one pair exactly as ``select --annotator label-studio`` does (a conversation with a system message and
two Markdown responses), signs in through the login form, picks "A is better" with its hotkey and
screenshots the task's labeling page in headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from activedpo_client.labelstudio import LabelStudioProject
from activedpo_client.lslocal import start_local
from activedpo_client.messages import Batch, SelectedPair

ROOT = Path(__file__).resolve().parents[1]
EMAIL, PASSWORD = "labeler@example.com", "activedpo-docs"

CONVERSATION = [
    {"role": "system", "content": "You are a concise assistant for a gardening shop."},
    {"role": "user", "content": "My basil keeps wilting. What should I do?"},
    {"role": "assistant", "content": "Is it indoors or outdoors, and how often do you water it?"},
    {"role": "user", "content": "Indoors, on a windowsill. I water it every day."},
]
RESPONSE_A = ("Water it **less**: daily watering on a windowsill drowns the roots.\n\n"
              "1. Water only when the top 2 cm of soil is dry.\n2. Make sure the pot drains.\n"
              "3. Give it 6 hours of light a day.")  # fmt: skip
RESPONSE_B = ("Basil likes water, so keep going and add fertiliser:\n\n```text\n"
              "fertiliser: 10 ml per litre, every day\n```\nIt should perk up in a week.")  # fmt: skip


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    data = Path(tempfile.mkdtemp(prefix="ls-docs-"))
    binary = Path(os.environ.get("ACTIVEDPO_LABEL_STUDIO", ROOT / ".venv-labelstudio" / "bin" / "label-studio"))
    ls = start_local(binary, data, email=EMAIL, password=PASSWORD)
    try:
        project = LabelStudioProject("activedpo: which response is better?", ls.url, ls.token)
        pair = SelectedPair("p-3f9c2a81d07b64e5", "<rendered by the policy's chat template>", RESPONSE_A,
                            RESPONSE_B, 0.0, 0, prompt_messages=json.dumps(CONVERSATION))  # fmt: skip
        (task,) = project.push(Batch("docs", "activedpo", "lease", 1, (pair,)), tag="run-docs-round-1")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(arg)
        service = webdriver.ChromeService(shutil.which("chromedriver") or "/usr/bin/chromedriver")
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.get(f"{ls.url}/user/login")
            driver.find_element(By.NAME, "email").send_keys(EMAIL)
            driver.find_element(By.NAME, "password").send_keys(PASSWORD)
            driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
            time.sleep(3)
            driver.get(f"{ls.url}/projects/{project.id}/data?task={task}")
            time.sleep(8)  # the labeling interface loads its bundle after the page
            driver.find_element(By.TAG_NAME, "body").send_keys("1")  # "A is better", by its hotkey
            time.sleep(1)
            out = ROOT / "docs" / "label-studio.png"
            driver.save_screenshot(str(out))
            print(f"wrote {out}")
        finally:
            driver.quit()
    finally:
        ls.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
