"""The Airflow pages and the morning e-mail in headless Chromium, as a new user meets them (`make test-ui`).

One embedded Airflow, one SMTP server and one browser for the module; the tests run in file order, as a
person would: the login, the trigger form, a tiny run watched to its end, its report, its e-mail. Each
step leaves a screenshot in artifacts/ui/.
"""

from __future__ import annotations

import base64
import email
import logging
import re
import shutil
import time
from email import policy
from html import escape
from urllib.parse import urlparse

import httpx
import pytest

from tests.servers import free_port, wait_for
from tests.ui.stack import ARTIFACTS, SMTP_CONN, Inbox, chromium, start_stack, stop_stack

pytestmark = pytest.mark.ui

if not (shutil.which("chromium") and shutil.which("chromedriver")):
    pytest.skip("needs Debian's chromium and chromium-driver (make test-ui installs them)", allow_module_level=True)

RECIPIENT = "ward@hospital.example"
FINISHED = ("success", "failed")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from aiosmtpd.controller import Controller

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # no INFO from aiosmtpd's thread after capture closes
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        running = start_stack(tmp_path_factory.mktemp("ui"), smtp.port, inbox)
        try:
            yield running
        finally:
            stop_stack(running)
    finally:
        smtp.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_window_size(1280, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def find(driver, css: str, timeout: float = 30):
    from selenium.webdriver.common.by import By

    return wait_for(
        lambda: next((e for e in driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None),
        timeout,
        f"a visible {css!r} on {driver.current_url}",
        interval=0.3,
    )


def log_in(driver, stack) -> None:
    find(driver, "input[name=username]").send_keys("admin")
    find(driver, "input[name=password]").send_keys(stack.password)
    find(driver, "button[type=submit]").click()


def api(stack, path: str) -> dict:
    answer = httpx.get(f"{stack.base}/api/v2{path}", headers={"Authorization": f"Bearer {stack.token()}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def images_decoded(driver) -> list[dict]:
    """Every <img> of the page once loading settled: its source and decoded width (0: broken)."""
    wait_for(
        lambda: driver.execute_script("return [...document.images].every(i => i.complete)"),
        30,
        "the page's images to load",
        interval=0.3,
    )
    return driver.execute_script("return [...document.images].map(i => ({src: i.currentSrc, width: i.naturalWidth}))")


def test_unauthenticated_visit_lands_on_login_and_returns(stack, browser):
    """A report link opened without a session shows Airflow's login, and logging in brings the reader back."""
    browser.get(f"{stack.base}/medcore-reports/")
    wait_for(lambda: "/auth/login" in browser.current_url, 30, "the login page")
    assert "next=" in browser.current_url
    shot(browser, "01-login")
    log_in(browser, stack)
    wait_for(lambda: browser.current_url == f"{stack.base}/medcore-reports/", 30, "the return to the reports list")
    assert "Training reports" in find(browser, "h1").text
    shot(browser, "02-back-after-login")


def test_nav_label_is_whole(stack, browser):
    """The nav entry reads "Reports" in full (its buttons are narrow: "Training reports" was cut)."""
    browser.get(f"{stack.base}/dags/medical_training_manual")
    label = find(browser, "nav a[href$='training-reports'], a[href$='training-reports']")
    assert label.text.strip() == "Reports"
    overflow = browser.execute_script(
        "return [...arguments[0].querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1 "
        "&& e.textContent.trim()).map(e => e.textContent)",
        label,
    )
    assert overflow == [], overflow


def test_trigger_form_offers_choices_and_runs_what_it_says(stack, browser):
    """The manual DAG's form: no unpause box, nothing required, names picked from a list, epochs 0 refused (the box
    holds to the schema's 1-1000); a tiny run triggered from it finishes without the nightly DAG ever running."""
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{stack.base}/dags/medical_training_manual")
    find(browser, "button[aria-label='Trigger Dag']").click()
    find(browser, "#element_smtp_conn_id")
    dialog = browser.find_element("css selector", "[role=dialog]")
    assert "Unpause" not in dialog.text, "the manual DAG is never paused: no box that could switch a schedule on"
    assert (
        browser.execute_script(
            "return document.querySelectorAll('[role=dialog] [aria-required=true], [role=dialog] [required]').length"
        )
        == 0
    ), "nothing is marked required"

    conditions = find(browser, "#element_conditions input")
    conditions.send_keys("pneu")
    options = browser.execute_script("return [...document.querySelectorAll('[id*=-option-]')].map(o => o.textContent)")
    assert options == ["pneumonia"], options  # offered from the config's names as the user types
    conditions.send_keys(Keys.ENTER)
    profiles = find(browser, "#element_profiles input")
    profiles.click()
    options = browser.execute_script("return [...document.querySelectorAll('[id*=-option-]')].map(o => o.textContent)")
    assert options == ["standard", "intensive"], options
    profiles.send_keys("standard", Keys.ENTER)

    epochs = find(browser, "input[name=element_epochs]")
    epochs.send_keys("0")
    find(browser, "#element_smtp_conn_id").click()  # blur: the bounded box refuses 0
    # The clamp is a React state update after the blur; a loaded CI machine read the box before it landed.
    wait_for(
        lambda: epochs.get_attribute("value") == "1", 15, "the form to hold epochs to the schema's minimum of 1", 0.2
    )
    epochs.send_keys(Keys.BACKSPACE, "1")
    find(browser, "#element_recipients").send_keys(RECIPIENT, Keys.ENTER)  # the trailing blank line people type
    find(browser, "#element_smtp_conn_id").send_keys(SMTP_CONN)
    shot(browser, "03-trigger-form")
    buttons = [b for b in browser.find_elements("css selector", "[role=dialog] button") if b.text.strip() == "Trigger"]
    buttons[-1].click()

    run = wait_for(
        lambda: (api(stack, "/dags/medical_training_manual/dagRuns")["dag_runs"] or [None])[0], 60, "the triggered run"
    )
    assert run["conf"]["conditions"] == ["pneumonia"] and run["conf"]["profiles"] == ["standard"]
    assert run["conf"]["epochs"] == 1
    started = time.monotonic()
    path = f"/dags/medical_training_manual/dagRuns/{run['dag_run_id']}"
    browser.get(f"{stack.base}/dags/medical_training_manual/runs/{run['dag_run_id']}")
    state = wait_for(
        lambda: api(stack, path)["state"] in FINISHED and api(stack, path)["state"],
        900,
        "the run to finish",
        interval=5,
    )
    shot(browser, "04-run-finished")
    browser.refresh()
    time.sleep(2)
    shot(browser, "04-run-finished")
    tasks = {t["task_id"]: t["state"] for t in api(stack, f"{path}/taskInstances")["task_instances"]}
    assert state == "success", tasks
    assert api(stack, "/dags/medical_training/dagRuns")["total_entries"] == 0, "the nightly DAG never ran"
    print(f"tiny run: {time.monotonic() - started:.0f} s from trigger to success")


def _report_url(stack) -> str:
    """The report page of the tiny run the form triggered (the first run; later tests trigger others)."""
    import json

    runs = api(stack, "/dags/medical_training_manual/dagRuns")["dag_runs"]
    first = min(runs, key=lambda r: r["run_after"])["dag_run_id"]
    folder = next(
        p.name
        for p in stack.runs_root.iterdir()
        if (p / "report.md").is_file() and json.loads((p / "run.json").read_text())["run_id"] == first
    )
    return f"{stack.base}/medcore-reports/runs/{folder}/"


def test_report_page_images_and_links(stack, browser):
    """From the reports list to the run's report: every image decodes, every link answers 200 (with the session)."""
    browser.get(f"{stack.base}/medcore-reports/")
    find(browser, "a[href^='runs/']").click()
    wait_for(lambda: browser.current_url == _report_url(stack), 30, "the report page")
    shot(browser, "05-report-first-screen")
    first_screen = browser.execute_script("return innerHeight")
    headings = browser.execute_script(
        "return [...document.querySelectorAll('h2')].filter(h => "
        "h.getBoundingClientRect().top < innerHeight).map(h => h.textContent)"
    )
    assert headings[:2] == ["This morning", "Next steps"], headings
    # The contents' link to the model opens its collapsed section and scrolls to it.
    model = find(browser, "a[href='#pneumonia--standard']")
    assert not browser.execute_script("return document.getElementById('pneumonia--standard').closest('details').open")
    model.click()
    wait_for(
        lambda: browser.execute_script("return document.getElementById('pneumonia--standard').closest('details').open"),
        10,
        "the section to open",
    )
    top = browser.execute_script("return document.getElementById('pneumonia--standard').getBoundingClientRect().top")
    assert 0 <= top < first_screen, top
    shot(browser, "05-report-model-opened")
    print(f"report page height: {browser.execute_script('return document.body.scrollHeight')} px collapsed")
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    images = images_decoded(browser)
    assert images and all(i["width"] > 0 for i in images), images
    links = browser.execute_script("return [...document.links].map(a => a.href)")
    assert links, "the report links its files"
    statuses = {}
    for link in sorted(set(links)):
        assert urlparse(link).netloc == urlparse(stack.base).netloc, f"{link}: the report points off this server"
        statuses[link] = browser.execute_async_script(
            "fetch(arguments[0], {credentials: 'same-origin'}).then(r => arguments[1](r.status), "
            "e => arguments[1](String(e)))",
            link.split("#")[0],
        )
    assert set(statuses.values()) == {200}, {k: v for k, v in statuses.items() if v != 200}
    shot(browser, "05-report-all-open")


def test_report_page_accessibility(stack, browser):
    """axe-core (bundled with axe-selenium-python, no network) finds no serious or critical violation."""
    from axe_selenium_python import Axe

    browser.get(_report_url(stack))
    find(browser, "h1")
    axe = Axe(browser)
    axe.inject()
    results = axe.run()
    bad = [v for v in results["violations"] if v["impact"] in ("serious", "critical")]
    (ARTIFACTS / "axe-report.txt").write_text(axe.report(results["violations"]))
    assert bad == [], axe.report(bad)


def test_email_renders_offline_with_its_images(stack, browser, tmp_path):
    """The e-mail received by the SMTP server: its HTML shows every image from its own inline parts (cid:), with
    nothing fetched from a server, as a mail client without network would show it."""
    envelope = wait_for(lambda: stack.inbox.envelopes and stack.inbox.envelopes[-1], 60, "the report e-mail")
    assert envelope.rcpt_tos == [RECIPIENT]
    message = email.message_from_bytes(envelope.content, policy=policy.default)
    html = message.get_body(preferencelist=("html",)).get_content()
    inline = {part["Content-ID"].strip("<>"): part for part in message.walk() if part["Content-ID"]}
    cids = set(re.findall(r'src="cid:([^"]+)"', html))
    assert cids and cids <= set(inline), (cids, list(inline))
    assert not re.search(r'<img[^>]+src="https?:', html), "no image is fetched from a server"
    for cid, part in inline.items():  # what a mail client does with cid: links
        data = base64.b64encode(part.get_payload(decode=True)).decode()
        html = html.replace(f"cid:{cid}", f"data:{part.get_content_type()};base64,{data}")
    # Above the body, as a mail client shows them: the subject (the run's verdict) and the addressee.
    heading = f"<p><b>Subject:</b> {escape(message['Subject'])}<br><b>To:</b> {escape(message['To'])}</p><hr>"
    page = ARTIFACTS / "email.html"
    page.write_text(html.replace("<main>", "<main>" + heading, 1), encoding="utf-8")
    browser.get(page.as_uri())
    images = images_decoded(browser)
    assert len(images) == len(cids) and all(i["width"] > 0 for i in images), images
    shot(browser, "06-email")


def test_email_link_goes_through_login_to_the_report(stack, tmp_path):
    """The e-mail's "Open this report in Airflow", opened in a browser with no session: login, then the report."""
    message = email.message_from_bytes(stack.inbox.envelopes[-1].content, policy=policy.default)
    html = message.get_body(preferencelist=("html",)).get_content()
    link = re.search(r'<a href="([^"]+)">Open this report in Airflow</a>', html).group(1)
    assert link == _report_url(stack)
    fresh = chromium(tmp_path / "fresh-profile")
    try:
        fresh.get(link)
        wait_for(lambda: "/auth/login" in fresh.current_url, 30, "the login page")
        log_in(fresh, stack)
        wait_for(lambda: fresh.current_url == link, 30, "the return to the report")
        assert all(i["width"] > 0 for i in images_decoded(fresh))
        shot(fresh, "07-email-link-after-login")
    finally:
        fresh.quit()


def test_the_morning_says_look_everywhere_and_why(stack, browser):
    """The tiny run meets no promotion gate, so every condition is "look": the e-mail subject, the report's title,
    its first screen, the Reports list and the verdict task all say "look", and the first screen names the failing
    gate with its figure and threshold."""
    message = email.message_from_bytes(stack.inbox.envelopes[0].content, policy=policy.default)
    assert message["Subject"].startswith("[medcore] look: pneumonia · 1/1 models succeeded"), message["Subject"]
    browser.get(_report_url(stack))
    assert find(browser, "h1").text == "medcore training status report: look"
    rows = browser.execute_script(
        "const t = document.querySelector('h2#this-morning ~ table');"
        "return [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
    )
    assert rows and all(r[1] == "⚠️ look" for r in rows), rows
    needs = rows[0][6]
    assert re.search(r"val (AUC lower bound \d\.\d\d < 0\.70|tier \w+ < moderate)", needs), needs
    assert "would change it" in needs, needs
    shot(browser, "08-first-screen-why")
    browser.get(f"{stack.base}/medcore-reports/")
    verdict = browser.execute_script(
        "return [...document.querySelectorAll('tbody tr')].map(r => r.cells[2].textContent)"
    )
    assert verdict[0] == "⚠️ look: pneumonia", verdict
    [run] = api(stack, "/dags/medical_training_manual/dagRuns")["dag_runs"][:1]
    xcom = api(
        stack,
        f"/dags/medical_training_manual/dagRuns/{run['dag_run_id']}/taskInstances/verdict/xcomEntries/return_value",
    )
    assert xcom["value"] == "look: pneumonia", xcom


def test_trend_plot_and_contact_sheet_are_shown_readable(stack, browser):
    """The Reports list shows the trend plot at its own size (its text readable), never shrunk to a thumbnail;
    the e-mail shows its contact sheets at their own size too."""
    browser.get(f"{stack.base}/medcore-reports/")
    plot = find(browser, "img[src*='trend']")
    images_decoded(browser)
    natural, shown = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].width]", plot)
    assert natural >= 600 and shown == natural, (natural, shown)
    browser.execute_script("arguments[0].scrollIntoView()", plot)
    plot.screenshot(str(ARTIFACTS / "09-trend-plot.png"))
    browser.get((ARTIFACTS / "email.html").as_uri())
    sheets = browser.execute_script(
        "return [...document.images].filter(i => i.alt.endsWith('contact_sheet')).map(i => [i.naturalWidth, i.width])"
    )
    assert sheets and all(natural == shown for natural, shown in sheets), sheets


def _trigger(stack, conf: dict) -> httpx.Response:
    return httpx.post(
        f"{stack.base}/api/v2/dags/medical_training_manual/dagRuns",
        headers={"Authorization": f"Bearer {stack.token()}"},
        json={"logical_date": None, "conf": conf},
        timeout=30,
    )


def test_epochs_zero_is_refused_before_a_run_exists(stack):
    """The REST API checks the same schema as the form: epochs 0 is refused with 400, naming the parameter."""
    before = api(stack, "/dags/medical_training_manual/dagRuns")["total_entries"]
    answer = _trigger(stack, {"epochs": 0, "conditions": ["pneumonia"]})
    assert answer.status_code == 400 and "epochs" in answer.text, answer.text
    assert api(stack, "/dags/medical_training_manual/dagRuns")["total_entries"] == before


def test_a_refused_plan_is_one_red_task_and_a_report(stack, browser):
    """What no schema can check (an address that is not one) fails `plan` alone, in one sentence without a
    traceback; the tasks after it handle "nothing was planned", and the Reports page lists the run with a short
    report saying it did not start and why."""
    answer = _trigger(stack, {"recipients": ["not-an-address"], "conditions": ["pneumonia"]})
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["dag_run_id"]
    path = f"/dags/medical_training_manual/dagRuns/{run_id}"
    wait_for(lambda: api(stack, path)["state"] in FINISHED, 300, "the refused run to end", interval=3)
    assert api(stack, path)["state"] == "failed"
    tasks = {t["task_id"]: t["state"] for t in api(stack, f"{path}/taskInstances")["task_instances"]}
    assert [t for t, state in tasks.items() if state == "failed"] == ["plan"], tasks
    assert tasks["report"] == "success" and tasks["promote"] == "success", tasks
    log = httpx.get(
        f"{stack.base}/api/v2{path}/taskInstances/plan/logs/1",
        params={"full_content": True},
        headers={"Authorization": f"Bearer {stack.token()}"},
        timeout=30,
    ).text
    sentence = "recipients: 'not-an-address' is not an e-mail address (name@host, one per line)"
    assert sentence in log and "Traceback" not in log, log[-3000:]
    browser.get(f"{stack.base}/medcore-reports/")
    row = wait_for(
        lambda: browser.execute_script(
            "return [...document.querySelectorAll('tbody tr')].map(r => r.textContent)"
            ".find(t => t.includes(arguments[0]))",
            run_id,
        ),
        30,
        "the refused run on the Reports page",
    )
    assert "❌ failed: the run did not start" in row, row
    browser.execute_script(
        "[...document.querySelectorAll('tbody a')].find(a => a.textContent.includes(arguments[0])).click()", run_id
    )
    find(browser, "h1")
    assert "The run did not start: " + sentence in browser.find_element("css selector", "main").text
    shot(browser, "10-refused-run-report")


def test_make_resend_with_a_connection_made_through_the_rest_api(stack):
    """`make resend RUN=<folder name> TO=...` finds the SMTP connection the DAG used, here created through the REST
    API (the metadata database) and known to the resend by nothing else, and sends to the given address."""
    import json
    import subprocess

    from tests.conftest import ROOT

    folder = urlparse(_report_url(stack)).path.rstrip("/").rsplit("/", 1)[1]
    smtp_port = urlparse(stack.env[f"AIRFLOW_CONN_{SMTP_CONN.upper()}"]).port
    created = httpx.post(
        f"{stack.base}/api/v2/connections",
        headers={"Authorization": f"Bearer {stack.token()}"},
        json={
            "connection_id": SMTP_CONN,
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": smtp_port,
            "extra": json.dumps(
                {
                    "disable_ssl": True,
                    "disable_tls": True,
                    "retry_limit": 0,
                    "timeout": 10,
                    "from_email": "ui@lab.example",
                }
            ),
        },
        timeout=30,
    )
    assert created.status_code == 201, created.text
    env = {k: v for k, v in stack.env.items() if k != f"AIRFLOW_CONN_{SMTP_CONN.upper()}"}  # the database's only
    before = len(stack.inbox.envelopes)
    done = subprocess.run(
        ["make", "--no-print-directory", "resend", f"RUN={folder}", "TO=night@hospital.example"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("sent: [medcore] look: pneumonia"), done.stdout
    envelope = stack.inbox.envelopes[before]
    assert envelope.rcpt_tos == ["night@hospital.example"] and envelope.mail_from == "ui@lab.example"
