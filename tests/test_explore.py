"""`textgen explore --html`: one self-contained page, checked in a real browser (headless
Chromium driven by Selenium): it renders the tokens, hovering a token shows the model's
candidates there, clicking one shows every head's attention, and the console stays clean.

Without Chromium and its driver the browser test is skipped, except where
TEXTGEN_REQUIRE_BROWSER is set (CI installs both and sets it, so it never skips there).
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from helpers import one_line_error, run_cli

PROMPT = "The cat sees </script><b>the</b> ball & the moon"  # markup stays text


def _page_data(page: str) -> dict:
    found = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    assert found, "the page carries its data"
    return json.loads(found.group(1))


def test_explore_writes_one_self_contained_page(capsys, monkeypatch, trained_folder, tmp_path):
    out = tmp_path / "page.html"
    code, stdout, err = run_cli(
        capsys, monkeypatch, "explore", PROMPT, "-m", str(trained_folder), "--html", str(out)
    )
    assert code == 0, err and stdout == ""
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    assert page.count("</script>") == 2  # the tokens' "</script>" cannot end the data
    data = _page_data(page)
    assert "".join(t["text"] for t in data["tokens"][1:]) == PROMPT
    assert data["layers"] == 2 and data["heads"] == 4
    n = len(data["tokens"])
    assert [len(row) for row in data["attention"]] == [2] * n
    assert all(len(data["attention"][q][1][3]) == q + 1 for q in range(n))
    assert len(data["lens"]["cells"]) == 3 and len(data["lens"]["cells"][0]) == n
    # an existing page is kept unless --overwrite; - writes the page to stdout
    code, _, err = run_cli(
        capsys, monkeypatch, "explore", PROMPT, "-m", str(trained_folder), "--html", str(out)
    )
    one_line_error(code, err, 2, "pass --overwrite")
    code, stdout, err = run_cli(
        capsys, monkeypatch, "explore", "The cat", "-m", str(trained_folder), "--html", "-"
    )
    assert code == 0 and stdout.startswith("<!DOCTYPE html>")


def test_explore_continues_the_prompt_and_marks_what_it_wrote(
    capsys, monkeypatch, trained_folder, tokenizer
):
    args = ["explore", "The cat", "-m", str(trained_folder), "--html", "-", "-n", "12"]
    code, stdout, err = run_cli(capsys, monkeypatch, *args, "--seed", "3")
    assert code == 0, err
    data = _page_data(stdout)
    prompt_tokens = len(tokenizer.encode_document("The cat"))
    assert data["generated_from"] == prompt_tokens
    assert prompt_tokens < len(data["tokens"]) <= prompt_tokens + 12
    assert "".join(t["text"] for t in data["tokens"][1:prompt_tokens]) == "The cat"
    _, again, _ = run_cli(capsys, monkeypatch, *args, "--seed", "3")
    assert again == stdout  # the same seed, the same page


def _browser(profile):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        if os.environ.get("TEXTGEN_REQUIRE_BROWSER"):
            pytest.fail(
                "Chromium and chromedriver are needed: apt-get install chromium chromium-driver"
            )
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    # headless, and quiet on a closed network: no background connections, no first run
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_page_works_in_a_real_browser(capsys, monkeypatch, trained_folder, tmp_path):
    out = tmp_path / "page.html"
    code, _, err = run_cli(
        capsys,
        monkeypatch,
        "explore",
        PROMPT,
        "-m",
        str(trained_folder),
        "--html",
        str(out),
        "-n",
        "8",
        "--seed",
        "1",
    )
    assert code == 0, err
    data = _page_data(out.read_text(encoding="utf-8"))
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser = _browser(tmp_path / "chromium-profile")
    try:
        browser.get(out.as_uri())
        tokens = browser.find_elements(By.CSS_SELECTOR, "#text .tok")
        assert len(tokens) == len(data["tokens"])
        assert [t.get_attribute("textContent") for t in tokens] == [
            t["text"] for t in data["tokens"]
        ]
        assert not browser.find_elements(By.CSS_SELECTOR, "#text b")  # markup shown as text
        tip = browser.find_element(By.ID, "tip")
        assert not tip.is_displayed()
        target = 4  # a token of the prompt: its candidates are the model's
        ActionChains(browser).move_to_element(tokens[target]).perform()
        assert tip.is_displayed()
        rows = tip.find_elements(By.CSS_SELECTOR, "tr")
        expected = data["tokens"][target]["top"]
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [
            text for text, _ in expected
        ]
        ActionChains(browser).move_to_element(tokens[target]).click().perform()
        heads = browser.find_elements(By.CSS_SELECTOR, "#attention .head")
        assert len(heads) == data["layers"] * data["heads"]
        keys = heads[0].find_elements(By.CSS_SELECTOR, ".keys span")
        assert len(keys) == target + 1  # from the token back to the start
        lens_cells = browser.find_elements(By.CSS_SELECTOR, "#lens td")
        assert len(lens_cells) == (data["layers"] + 1) * len(data["tokens"])
        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
    finally:
        browser.quit()
