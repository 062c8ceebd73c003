"""The labeling page in a real browser: a person signs in to Label Studio, reads the conversation and both
rendered responses, picks with the mouse and with hotkeys, marks a tie and "both unacceptable", cannot
submit an empty answer, skips, edits after done, adds and deletes a second annotation; the selection
server ends up holding each person's current answer once.

Headless Chromium through Selenium (Debian's ``chromium`` and ``chromium-driver``). Skips when no browser
is installed, and fails instead under ``ACTIVEDPO_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from activedpo_client.labelfiles import CHOICES
from activedpo_client.labelstudio import Held, LabelStudioProject
from activedpo_client.messages import CandidateGroup
from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient

SMALL = ["--proj-dim", "128", "--lora-r", "8", "--lora-alpha", "16"]
WAIT = 60.0  # seconds for what takes one on an idle machine


def _browser_parts():
    """(chromium, chromedriver) paths, or the reason there is no browser here."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[dev]')"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        return None, "no chromium and chromedriver (apt-get install chromium chromium-driver)"
    return (chromium, driver), ""


@pytest.fixture(scope="module")
def browser():
    parts, why = _browser_parts()
    if parts is None:
        if os.environ.get("ACTIVEDPO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ACTIVEDPO_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = parts[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(parts[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """Label Studio 1.23's labeling page as a person uses it (selectors checked against its markup)."""

    SUBMIT = "button[data-testid=bottombar-submit-button]"
    UPDATE = "button[data-testid=bottombar-update-button]"
    SKIP = "button[data-testid=bottombar-skip-button]"
    ANOTHER = "button[aria-label='Create an annotation']"
    TAB = ".lsf-annotation-button"
    TASK_ID = ".lsf-current-task__task-id"
    CLOSE_MODAL = "button[aria-label='Close modal']"

    def __init__(self, driver, url: str, project: int):
        self.d, self.url, self.project = driver, url, project

    # ---- waiting and clicking (the page re-renders a task once or twice right after it loads) -----------

    def wait(self, timeout: float = WAIT):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.d, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])

    def click(self, by, selector: str) -> None:
        from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
        from selenium.webdriver.support import expected_conditions as ec

        for _ in range(6):
            try:
                self.wait().until(ec.element_to_be_clickable((by, selector))).click()
                return
            except (StaleElementReferenceException, ElementClickInterceptedException):
                time.sleep(0.5)
        raise AssertionError(f"could not click {selector}")

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.d.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        return " ".join(e.text for e in self.css(selector))

    @staticmethod
    def choice(text: str) -> str:
        return f"//label[contains(@class,'lsf-choice__checkbox')][.//span[normalize-space(text()[1])='{text}']]"

    def task_id(self) -> int | None:
        try:
            return int(self.css(self.TASK_ID)[0].text.split()[0].lstrip("#"))
        except (IndexError, ValueError):
            return None

    def checked(self) -> list[str]:
        return [i.get_attribute("name") for i in self.css(".lsf-choices input:checked")]

    def loaded(self, task: int | None = None) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        first = (By.XPATH, self.choice(CHOICES[0][1]))
        self.wait().until(ec.element_to_be_clickable(first))
        if task is not None:
            self.wait().until(lambda d: self.task_id() == task)
        time.sleep(1.0)
        self.wait().until(ec.element_to_be_clickable(first))

    # ---- what a person does ----------------------------------------------------------------------------

    def sign_in(self, email: str, password: str) -> None:
        from selenium.webdriver.common.by import By

        self.d.get(f"{self.url}/user/login")
        self.d.find_element(By.NAME, "email").send_keys(email)
        self.d.find_element(By.NAME, "password").send_keys(password)
        self.d.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        self.wait().until(lambda d: "/user/login" not in d.current_url)

    def open(self, task: int) -> None:
        self.d.get(f"{self.url}/projects/{self.project}/data?task={task}")
        self.loaded(task)

    def pick(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        self.click(By.XPATH, self.choice(text))
        self.wait(10).until(lambda d: text in self.checked())

    def key(self, key: str, then: str) -> None:
        from selenium.webdriver.common.by import By

        self.d.find_element(By.TAG_NAME, "body").send_keys(key)
        self.wait(10).until(lambda d: then in self.checked())

    def ctrl(self, key) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        ActionChains(self.d).key_down(Keys.CONTROL).send_keys(key).key_up(Keys.CONTROL).perform()

    def submit(self, with_keys: bool = False) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as ec

        self.ctrl(Keys.ENTER) if with_keys else self.click(By.CSS_SELECTOR, self.SUBMIT)
        self.wait().until(ec.visibility_of_element_located((By.CSS_SELECTOR, self.UPDATE)))  # saved

    def update(self) -> None:
        from selenium.webdriver.common.by import By

        self.click(By.CSS_SELECTOR, self.UPDATE)
        self.wait().until(lambda d: [b for b in self.css(self.UPDATE) if not b.is_enabled()])  # saved: disabled again

    def another_annotation(self, key: str, then: str) -> int:
        """The "+" tab: a second annotation by the same person; returns its id once saved."""
        from selenium.webdriver.common.by import By

        saved = len(self.css(f"{self.TAB}_submitted"))
        self.click(By.CSS_SELECTOR, self.ANOTHER)
        self.wait().until(lambda d: self.css(f"{self.TAB}_draft{self.TAB}_selected"))
        time.sleep(0.5)
        self.key(key, then)
        self.click(By.CSS_SELECTOR, self.SUBMIT)
        self.wait().until(lambda d: len(self.css(f"{self.TAB}_submitted")) == saved + 1)
        return int(self.css(f"{self.TAB}_selected")[0].get_attribute("data-annotation-id"))

    def delete_annotation(self, annotation: int) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        tab = f"{self.TAB}[data-annotation-id='{annotation}']"
        ActionChains(self.d).move_to_element(self.css(tab)[0]).perform()  # its menu shows on hover
        self.click(By.CSS_SELECTOR, f"{tab} .lsf-annotation-button__trigger")
        self.click(By.XPATH, "//div[contains(@class,'lsf-dropdown') and contains(@class,'lsf-visible')]"
                             "//div[normalize-space()='Delete Annotation']")  # fmt: skip
        self.click(By.CSS_SELECTOR, "button[data-testid=dialog-ok-button]")

    def label_all_tasks(self) -> str:
        """Open the "Label All Tasks" stream; returns the instructions it shows first (then closes them)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.d.get(f"{self.url}/projects/{self.project}/data?labeling=1")
        self.wait().until(ec.visibility_of_element_located((By.CSS_SELECTOR, self.CLOSE_MODAL)))
        shown = self.text("body")
        self.click(By.CSS_SELECTOR, self.CLOSE_MODAL)
        self.loaded()
        return shown


def conversation() -> list[dict]:
    return [{"role": "system", "content": "You answer in one short paragraph."},
            {"role": "user", "content": "How do I reverse a list in Python?"},
            {"role": "assistant", "content": "Do you want a copy or in place?"},
            {"role": "user", "content": "A copy, please."}]  # fmt: skip


def test_a_person_labels_in_the_browser_and_the_server_holds_each_current_answer_once(
    tiny_world, tmp_path, label_studio, browser
):
    t0 = time.perf_counter()
    messages = json.dumps(conversation())
    responses = [" calm **wave** tide", " bright moss\n\n```python\nxs[::-1]\n```"]
    groups = [CandidateGroup(p, responses, messages=messages) for p in tiny_world.task.train_prompts()[:5]]
    with (
        EmbeddedServer(tmp_path / "state", tiny_world.sft_dir, args=SMALL) as server,
        SelectorClient(Connection(server.target)) as client,
    ):
        client.wait_ready()
        client.add_candidates(groups)
        batch = client.select(5)
        assert {p.conversation()[0]["role"] for p in batch.pairs} == {"system"}  # the server kept the messages
        project = LabelStudioProject("activedpo in the browser", label_studio.url, label_studio.token)
        tasks = project.push(batch, tag="browser-r1")
        held: dict[str, Held] = {}

        def sync() -> list:
            """One pass as ``labelstudio sync`` does it: send what changed, remember what the server holds."""
            pulled = project.pull(tasks)
            send = project.changes(tasks, pulled, held)
            results = client.submit_labels(send) if send else []
            assert all(r.accepted for r in results), results
            for lab in send:
                held[lab.idempotency_key] = Held(lab.pair_id, lab.annotator, lab.preference, lab.revision)
            return results

        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        views = project.client.views.list(project=project.id)  # the ids that invite bias are hidden
        hidden = views[0].data["hiddenColumns"] if isinstance(views[0].data, dict) else views[0].data.hiddenColumns
        assert {"tasks:data.pair_id", "tasks:data.rank", "tasks:data.activedpo_batch"} <= set(hidden["explore"])
        page = Page(browser, label_studio.url, project.id)
        page.sign_in("admin@example.com", "activedpo-local")
        page.open(tasks[0])
        said = page.text(".adpo-prompt")
        assert all(m["content"] in said for m in conversation())  # every turn, the system message included
        assert "<|" not in said and "system" in said.lower()
        assert [e.text for e in page.css(".adpo-resp strong")] == ["wave"]  # Markdown rendered, not raw
        assert "xs[::-1]" in page.text(".adpo-resp pre code") and "**" not in page.text(".adpo-resp")
        assert [e.text for e in page.css(".lsf-choice .lsf-hint")] == [f"[{k}]" for _, _, k in CHOICES]
        assert "Ctrl+Enter submits" in page.text(".lsf-main-view, body")
        page.pick("A is better")  # the mouse
        page.submit()
        page.open(tasks[1])
        page.key("2", "B is better")  # hotkeys
        page.submit(with_keys=True)
        page.open(tasks[2])
        assert not page.css(Page.SUBMIT)[0].is_enabled()  # an empty answer cannot be submitted
        page.ctrl(Keys.ENTER)  # Ctrl+Enter with nothing picked: nothing is saved
        time.sleep(1.0)
        assert not project.client.tasks.get(id=tasks[2]).annotations
        page.key("3", "About the same")
        page.submit()
        page.open(tasks[3])
        page.key("4", "Both unacceptable")
        page.submit()
        shown = page.label_all_tasks()  # the instructions come first; the stream serves the one task left
        assert "Which response is better?" in shown and "Both unacceptable" in shown
        assert page.task_id() == tasks[4]
        page.click(By.CSS_SELECTOR, Page.SKIP)
        page.wait().until(lambda d: "No More Tasks Left" in page.text("body"))

        assert len(sync()) == 4  # the skip is no label
        me = "admin@example.com"
        ids = [p.pair_id for p in batch.pairs]

        def answers() -> dict:
            return {(ids.index(x.pair_id), x.annotator): x.preference for x in client.export_labels(include_ties=True)}

        assert answers() == {(0, me): "A", (1, me): "B", (2, me): "TIE", (3, me): "BOTH_BAD"}
        status = client.status()
        assert (status.labeled, status.ties, status.both_bad, status.annotations) == (2, 1, 1, 4)

        page.open(tasks[0])  # an edit after the batch is done
        page.pick("B is better")
        page.update()
        page.open(tasks[1])
        second = page.another_annotation("1", "A is better")  # the same person, the other way
        results = sync()
        assert sorted(r.revised for r in results) == [True, True]
        assert answers() == {(0, me): "B", (1, me): "A", (2, me): "TIE", (3, me): "BOTH_BAD"}
        page.delete_annotation(second)  # their first annotation is their answer again
        page.wait().until(lambda d: len(project.client.tasks.get(id=tasks[1]).annotations) == 1)
        assert [r.revised for r in sync()] == [True]
        assert answers() == {(0, me): "B", (1, me): "B", (2, me): "TIE", (3, me): "BOTH_BAD"}
        trained = [(ids.index(x.pair_id), x.chosen) for x in client.export_labels()]
        assert sorted(trained) == [(0, batch.pairs[0].response_b), (1, batch.pairs[1].response_b)]
        assert sync() == [] and client.status().annotations == 4  # nothing changed: nothing sent
    print(f"\nbrowser test: {time.perf_counter() - t0:.1f} s")
