"""The review page in a real browser: Debian's headless Chromium, driven by Selenium. Skipped,
saying how to run it, where Chromium or its driver is missing; failed there under CI (``.ci/run``
installs both)."""

from __future__ import annotations

import json

from tests.review_pages.conftest import PER_CELL


def test_the_review_page_in_a_real_browser(reviewed, browser):
    from selenium.webdriver.common.by import By

    run, index, gone = reviewed
    browser.get(index.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls  # nothing leaves file://
    images = browser.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
    )
    assert images and all(loaded for _, loaded in images), images

    link = browser.find_elements(By.CSS_SELECTOR, "table.cm a")[0]  # the first non-empty cell
    target, count = link.get_attribute("href").split("#")[1], int(link.text)
    link.click()
    assert browser.execute_script("return location.hash") == f"#{target}"
    t, p = target.removeprefix("cell-").split("-")
    cards = browser.find_elements(By.CSS_SELECTOR, f"#{target} figure.card")
    assert len(cards) == min(count, PER_CELL if t != p else 1)
    assert browser.find_element(By.ID, target).is_displayed()

    stored = json.loads((run / "metrics" / "val_subgroups.json").read_text())["subgroups"]
    rows = browser.find_elements(By.CSS_SELECTOR, "table.subgroups tr")[1:]
    shown = [[c.text for c in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert len(shown) == len(stored)
    for cells, entry in zip(shown, stored):
        assert cells[0].startswith(f"{entry['subgroup']} = {entry['group'] or 'unknown'}")
        assert [int(cells[1]), int(cells[2])] == [entry["num_images"], entry["num_patients"]]
        assert cells[3].startswith(f"{entry['metrics']['accuracy']:.3f}")
