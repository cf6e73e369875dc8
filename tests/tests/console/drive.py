"""Drives Squall's console at /ui in headless Chromium (selenium) against a running cluster.

argv: base URL, admin key, read-only key name, read-only key, dead-lettered invocation id,
succeeded invocation id, trace URL prefix, screenshot folder. Exits non-zero with a message on
the first expectation that fails.
"""
import json
import os
import shutil
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, admin, read_name, read_key, dead_id, ok_id, trace_prefix, shots = sys.argv[1:9]
os.makedirs(shots, exist_ok=True)

options = webdriver.ChromeOptions()
for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            "--window-size=1280,800", "--force-device-scale-factor=1"):
    options.add_argument(arg)
browser = shutil.which("chromium") or shutil.which("chromium-browser")
if browser:
    options.binary_location = browser
driver_path = shutil.which("chromedriver")
if not driver_path:
    sys.exit("chromedriver is not on PATH (scripts/install-console-clients --browser installs it)")
driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
wait = WebDriverWait(driver, 20)


def shot(name):
    driver.save_screenshot(os.path.join(shots, name))


def check(condition, message):
    if not condition:
        shot("failure.png")
        sys.exit(message + "\n--- page:\n" + driver.find_element(By.TAG_NAME, "body").text[:3000])


def visible(css):
    return wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))


def sign_in(key):
    field = visible("#key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "signin-button").click()


def points(css="svg.chart circle.point"):
    return driver.find_elements(By.CSS_SELECTOR, css)


# A function page's latency chart (the page before it may have charts of its own).
LATENCY = "svg.chart circle.point[data-series='p50']"


def open_hash(h):
    driver.execute_script("location.hash = arguments[0]", h)


try:
    driver.get(base + "/ui")
    visible("#signin")
    # A wrong key is refused with the API's own words, and the form stays.
    sign_in("sq_not_a_key_at_all")
    notice = visible("#notice")
    check("refused" in notice.text or "unauthorized" in notice.text, "no refusal shown: " + notice.text)
    check(driver.find_element(By.ID, "signin").is_displayed(), "a refused key left the sign-in form")

    sign_in(admin)
    visible("#nav a[data-page='dlq']")
    nav = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#nav a")]
    check(nav == ["Functions", "Invocations", "Dead letters", "Schedules", "Triggers", "Fleet"], "admin nav: %r" % nav)

    # Functions: the list, then one function's charts with data points.
    visible("a[href='#/functions/hello']").click()
    wait.until(lambda d: len(points(LATENCY)) > 0)
    series = {p.get_attribute("data-series") for p in points()}
    check({"invocations", "errors", "error rate", "p50", "p95", "p99"} <= series, "chart series: %r" % series)
    nonzero = [p for p in points() if p.get_attribute("data-series") == "invocations" and float(p.get_attribute("data-value")) > 0]
    check(nonzero, "no invocation-rate point above zero")
    shot("functions.png")

    # Invocations: statuses come from the API; a succeeded one opens with its output.
    open_hash("#/invocations")
    visible("tr.invocation-row")
    options_text = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#filter-status option")]
    check("succeeded" in options_text and "dead_lettered" in options_text, "status filter: %r" % options_text)
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.invocation-row")
    check(len(rows) >= 8, "%d invocation rows" % len(rows))
    shot("invocations.png")
    driver.find_element(By.CSS_SELECTOR, "a[href='#/invocations/%s']" % ok_id).click()
    output = visible("#invocation-output pre")
    check("hello" in output.text.lower(), "output: %r" % output.text)
    driver.find_element(By.CSS_SELECTOR, "#invocation-output button.toggle-hex").click()
    check(output.text.startswith("00000000  "), "hex view: %r" % output.text)
    link = visible("a.trace-id")
    check(link.get_attribute("href").startswith(trace_prefix) and len(link.text) == 32, "trace link: " + link.get_attribute("href"))
    shot("invocation.png")

    # The dead-lettered invocation: its attempts, input and trace link.
    open_hash("#/invocations/" + dead_id)
    visible("tr.attempt-row")
    link = visible("a.trace-id")
    check(link.get_attribute("href").startswith(trace_prefix), "trace link: " + link.get_attribute("href"))

    # Dead letters: replay it (confirming first), and it leaves the list.
    open_hash("#/dlq")
    visible("tr.dlq-row[data-id='%s']" % dead_id)
    shot("dead-letters.png")
    driver.find_element(By.CSS_SELECTOR, "button.replay[data-id='%s']" % dead_id).click()
    wait.until(EC.alert_is_present())
    driver.switch_to.alert.accept()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "tr.dlq-row[data-id='%s']" % dead_id))
    visible("p.replayed")

    # Fleet: the live chart draws a point per poll.
    open_hash("#/fleet")
    visible("tr.worker-row")
    wait.until(lambda d: len(points()) >= 2)
    shot("fleet.png")

    # Readable on a phone: nothing wider than the screen but scrollable tables.
    driver.set_window_size(390, 844)
    open_hash("#/functions/hello")
    wait.until(lambda d: len(points(LATENCY)) > 0)
    overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 1, "the page is %dpx wider than a phone" % overflow)
    shot("functions-phone.png")
    driver.set_window_size(1280, 800)

    # A read-only key: no page, button or link that its scope would refuse.
    driver.find_element(By.ID, "signout").click()
    sign_in(read_key)
    visible("#nav a[data-page='functions']")
    nav = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#nav a")]
    check(nav == ["Functions", "Fleet"], "read-only nav: %r" % nav)
    open_hash("#/dlq")
    visible("p.needs-scope")
    check(not driver.find_elements(By.CSS_SELECTOR, "button.replay, button.remove, button.replay-all"), "a read-only key sees a replay button")
    open_hash("#/functions/hello")
    wait.until(lambda d: len(points(LATENCY)) > 0)
    check(not driver.find_elements(By.CSS_SELECTOR, "a[href^='#/invocations']"), "a read-only key is offered invocations")
    shot("read-only.png")

    # Revoked while signed in: the next call returns to sign-in.
    request = urllib.request.Request(base + "/v1/keys/" + read_name, method="DELETE",
                                     headers={"Authorization": "Bearer " + admin})
    urllib.request.urlopen(request).read()
    deadline = time.time() + 10
    while True:
        open_hash("#/fleet" if driver.execute_script("return location.hash") != "#/fleet" else "#/functions")
        time.sleep(0.3)
        if driver.find_element(By.ID, "signin").is_displayed():
            break
        check(time.time() < deadline, "a revoked key did not return to sign-in")
    check("refused" in driver.find_element(By.ID, "notice").text, "no word on the revoked key")
    print(json.dumps({"ok": True, "screenshots": sorted(os.listdir(shots))}))
finally:
    driver.quit()
