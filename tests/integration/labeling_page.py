"""Label Studio's labeling page driven as a person uses it (:class:`Page`), for the browser test in
``test_labelstudio.py`` (which shares that file's Label Studio); the ``browser`` fixture is in conftest.py."""

from __future__ import annotations

import time

from activedpo_client.labelfiles import CHOICES

WAIT = 60.0  # seconds for what takes one on an idle machine


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
