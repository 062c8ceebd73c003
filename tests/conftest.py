"""Shared fixtures: the tiny toy world (built once per session, in seconds) and checkpoints on it.

Nothing is downloaded: every model is built here, from the toy world's own corpus.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers: one thread each (and their servers), not four
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


# The longest test files, longest first (their time: `pytest --durations=0`). `make test` runs two workers that
# take whole files in collection order (`--no-loadscope-reorder`: xdist would order them by test count, which
# puts the one-test files of a minute and a half last), so these start first and the short files fill in.
LONGEST_FIRST = ("integration/test_labelstudio.py", "e2e/test_round.py", "e2e/test_own_model.py",
                 "e2e/test_round_resume.py", "unit/trainer/test_default_world.py", "integration/test_server.py",
                 "integration/test_server_defects.py", "e2e/test_walkthrough.py", "e2e/test_bench.py")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, name in enumerate(LONGEST_FIRST) if path.endswith(name)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: tests within a file keep their order


@pytest.fixture(scope="session", autouse=True)
def _quiet():
    from activedpo_core.progress import quiet_libraries

    quiet_libraries()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_world(cache_dir):
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    return build_toyworld(ToyWorldConfig.preset("tiny"), cache_dir=cache_dir)


@pytest.fixture(scope="session")
def random_adapter(tiny_world, tmp_path_factory):
    """A checkpoint on the tiny world with a LoRA adapter whose A and B are both random (non-zero)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from activedpo_core.checkpoint import CheckpointManifest, load_model

    out = tmp_path_factory.mktemp("random_adapter")
    torch.manual_seed(1)
    base = load_model(tiny_world.sft_dir).model
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(out / "adapter")
    manifest = CheckpointManifest.new(
        base=str(tiny_world.sft_dir), adapter=str(out / "adapter"), parent_id=tiny_world.sft_checkpoint.id
    )
    manifest.save(out)
    return manifest


# ---- a user's own model: not a toy world ------------------------------------------------------


def build_user_model(root, arch: str):
    """A tiny ``arch`` model (gpt2: Conv1D layers; gpt_neox: fused query_key_value; llama) from a fresh
    transformers config, with a word-level tokenizer trained by ``tokenizers`` that has a chat template
    and an EOS but no pad token (as GPT-2's)."""
    from transformers import AutoTokenizer

    from activedpo_trainer.localmodels import build_local_model

    build_local_model(root, arch)
    assert AutoTokenizer.from_pretrained(root).pad_token is None  # the no-pad-token path is under test too
    return root


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return build_user_model(tmp_path_factory.mktemp("gpt2"), "gpt2")


@pytest.fixture(scope="session")
def neox_dir(tmp_path_factory):
    return build_user_model(tmp_path_factory.mktemp("neox"), "gpt_neox")


@pytest.fixture(scope="session")
def reward_dir(tmp_path_factory, gpt2_dir):
    from activedpo_trainer.localmodels import build_local_reward_model

    return build_local_reward_model(tmp_path_factory.mktemp("rm"), gpt2_dir)


# ---- a real Label Studio server ---------------------------------------------------------------

LABEL_STUDIO_BIN = Path(__file__).resolve().parents[1] / ".venv-labelstudio" / "bin" / "label-studio"


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """Label Studio (its own venv, `make install` puts it there) on a free 127.0.0.1 port, SQLite in a temp
    dir (a copy of the database migrated once per install: about 5 s to answer /health), a preset user and legacy
    API token; once per test run."""
    binary = Path(os.environ.get("ACTIVEDPO_LABEL_STUDIO", LABEL_STUDIO_BIN))
    if not binary.exists():
        why = f"Label Studio is not installed at {binary} (make install puts it there)"
        if os.environ.get("ACTIVEDPO_REQUIRE_LABEL_STUDIO"):
            pytest.fail(why)
        pytest.skip(why)
    from activedpo_client.labelstudio import LabelStudioError
    from activedpo_client.lslocal import start_local

    data = tmp_path_factory.mktemp("label-studio")
    try:
        server = start_local(binary, data, log=data / "label-studio.log")
    except LabelStudioError as e:
        pytest.fail(f"{e}: {(data / 'label-studio.log').read_text()[-2000:]}")
    yield server
    server.stop()


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
    """Headless Chromium through Selenium (Debian's ``chromium`` and ``chromium-driver``); skips when none is
    installed, and fails instead under ``ACTIVEDPO_REQUIRE_BROWSER=1`` (set by ``.ci/run``, which installs one)."""
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
