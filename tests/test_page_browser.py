"""The page `GET /ui` in a real browser: headless Chromium (selenium + chromedriver) against a real server (uvicorn
on 127.0.0.1) with a tiny random model. A user signs in with their key, sees their history, runs an explanation
(one weight row per history item, the with / without history outputs the API gives) and erases themselves after
the confirmation; then their key, no key and another user's id are refused with the API's own messages.

Skips with one line where selenium, chromium or chromedriver is missing (`.ci/run` installs them)."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from test_explain_server import MODEL, served  # noqa: F401, F811  (the same tiny server fixture, one per module)
from test_server import ADMIN, LOVER


def _browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("browser test skipped: selenium is not installed (pip install -e '.[test]')")
    chromium = os.environ.get("PPLUG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("PPLUG_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("browser test skipped: chromium or chromedriver not found (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="pplug-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        browser = webdriver.Chrome(options=options, service=Service(driver))
    except Exception as e:  # noqa: BLE001 - any failure to start means "no browser here", said in one line
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"browser test skipped: chromium did not start ({type(e).__name__}: {' '.join(str(e).split())[:160]})")
    return browser, profile


@pytest.fixture(scope="module")
def browser():
    b, profile = _browser()
    yield b
    b.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait(browser, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda b: condition(b))


def _sign_in(browser, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url + "/ui")
    field = browser.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.ID, "signin").click()


def test_a_user_signs_in_sees_history_explains_and_erases(browser, served):
    from selenium.webdriver.common.by import By

    r = served.call("POST", "/v1/users", json={"user_id": "page-user"})
    key = r.json()["api_key"]
    assert served.call("POST", "/v1/users/page-user/history", key, json={"items": LOVER}).status_code == 200
    other = served.call("POST", "/v1/users", json={"user_id": "page-other"}).json()["api_key"]

    _sign_in(browser, served.url, key)
    _wait(browser, lambda b: b.find_element(By.ID, "account").is_displayed())
    assert browser.find_element(By.ID, "who").text == "page-user"
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tr")
    assert len(rows) == len(LOVER) and LOVER[0]["text"] in rows[0].text
    assert "stored on this server" in browser.find_element(By.ID, "privacy").text

    browser.find_element(By.ID, "prompt").send_keys("the movie was great")
    browser.find_element(By.ID, "explain").click()
    _wait(browser, lambda b: b.find_element(By.ID, "explanation").is_displayed())
    weights = browser.find_elements(By.CSS_SELECTOR, "#weights tr.weight-row")
    assert len(weights) == len(LOVER)
    api = served.call("POST", "/v1/explain", key, json={"model": MODEL, "input": "the movie was great"}).json()
    shown = browser.find_element(By.ID, "out-history").text  # "<output>  (1: 0.20, 2: ...)"
    assert shown.split("(")[0].strip() == api["counterfactual"]["history"]["output"]
    assert browser.find_element(By.ID, "out-cold").text.startswith(api["counterfactual"]["cold_start"]["output"])
    top = max(api["items"], key=lambda it: it["weight"])
    assert weights[0].find_elements(By.TAG_NAME, "td")[1].text == f"{top['weight']:.4f}"  # heaviest first

    browser.find_element(By.ID, "erase").click()
    _wait(browser, lambda b: b.find_element(By.ID, "confirm").is_displayed())
    assert served.call("GET", "/v1/users/page-user").status_code == 200  # nothing happens before the confirmation
    browser.find_element(By.ID, "erase-yes").click()
    _wait(browser, lambda b: b.find_element(By.ID, "erased").text.startswith("Erased page-user"))
    assert served.call("GET", "/v1/users/page-user").status_code == 404

    # the erased user's key, no key, another user's id: the API's refusals, shown as its message
    _sign_in(browser, served.url, key)
    _wait(browser, lambda b: b.find_element(By.ID, "login-error").text == "invalid API key")
    _sign_in(browser, served.url, "")
    _wait(browser, lambda b: "missing API key" in b.find_element(By.ID, "login-error").text)
    assert not browser.find_element(By.ID, "account").is_displayed()
    _sign_in(browser, served.url, other)
    _wait(browser, lambda b: b.find_element(By.ID, "account").is_displayed())
    browser.execute_script("openUser('page-admin-only')")  # a user key asking for another user
    _wait(browser, lambda b: "may not access user" in b.find_element(By.ID, "error").text)
    assert not browser.find_element(By.ID, "account").is_displayed()


def test_the_admin_key_opens_any_user(browser, served):
    from selenium.webdriver.common.by import By

    key = served.call("POST", "/v1/users", json={"user_id": "page-any"}).json()["api_key"]
    served.call("POST", "/v1/users/page-any/history", key, json={"items": LOVER[:2]})
    _sign_in(browser, served.url, ADMIN)
    _wait(browser, lambda b: b.find_element(By.ID, "pick").is_displayed())
    browser.find_element(By.ID, "user-id").send_keys("page-any")
    browser.find_element(By.ID, "open").click()
    _wait(browser, lambda b: b.find_element(By.ID, "account").is_displayed())
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history tr")) == 2
    field = browser.find_element(By.ID, "user-id")
    field.clear()
    field.send_keys("no-such-user")
    browser.find_element(By.ID, "open").click()
    _wait(browser, lambda b: "unknown user" in b.find_element(By.ID, "error").text)
