"""The console's journey in real headless Chromium, driven through WebDriver (Selenium with
Debian's chromium-driver), with axe-core injected into every page it visits.

Run by tests/tests/e2e/console.rs against a real stack. Arguments: a JSON object on stdin
(base_url, client_id, secret, shots_dir, axe_js, chromium, chromedriver). Exits non-zero with
the reason on the first failed expectation; prints one JSON line of what it saw on success.
"""

import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

ARGS = json.load(sys.stdin)
BASE = ARGS["base_url"]
SHOTS = ARGS["shots_dir"]
with open(ARGS["axe_js"], encoding="utf-8") as f:
    AXE = f.read()

seen = {"pages_checked": [], "screenshots": []}
STARTED = time.time()


def log(step):
    print(f"{time.time() - STARTED:6.1f} s  {step}", file=sys.stderr, flush=True)


def fail(message):
    raise SystemExit(f"console journey: {message}")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = ARGS["chromium"]
    # Without the networking flags Chromium waits on services the closed network never answers.
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tempfile.mkdtemp(prefix='tenantry-chromium-')}",
        "--window-size=1280,900",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(ARGS["chromedriver"]), options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(20)
    return driver


def wait(what, probe, within=10.0):
    deadline = time.time() + within
    last = None
    while time.time() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as e:  # the page may be between two loads
            last = e
        time.sleep(0.2)
    fail(f"{what}: not within {within} s (last error: {last}); at {driver.current_url}")


def check_page(name):
    """axe-core on the current page (no serious or critical violation), no CSP or script
    error in the browser's log, and a screenshot."""
    log(f"checking {name}")
    driver.execute_script(AXE)
    violations = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ['violations']})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)}))))
          .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
        """
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    if bad:
        fail(f"axe on {name} ({driver.current_url}): {json.dumps(bad)}")
    errors = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        # The browser asks every site for one; the console has none.
        and "favicon.ico" not in entry["message"]
    ]
    if errors:
        fail(f"browser errors on {name}: {errors}")
    path = os.path.join(SHOTS, f"{len(seen['screenshots']) + 1:02d}-{name}.png")
    driver.save_screenshot(path)
    seen["pages_checked"].append({"page": name, "minor_violations": len(violations)})
    seen["screenshots"].append(path)


def path():
    return driver.current_url[len(BASE):]


def fill(element_id, text):
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def submit(button_id):
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, button_id).click()
    wait(f"the page after {button_id}", lambda: old.id != driver.find_element(By.TAG_NAME, "html").id)


def create_account(tenant_id, name, parent=""):
    driver.get(f"{BASE}/console/accounts")
    fill("new-tenant-id", tenant_id)
    fill("new-name", name)
    fill("new-parent", parent)
    submit("create-account")
    if path() != f"/console/accounts/{tenant_id}":
        fail(f"creating {tenant_id} ended at {path()}: {driver.find_element(By.TAG_NAME, 'main').text}")


def entitlement_row(feature):
    rows = driver.find_elements(By.CSS_SELECTOR, f'#entitlements-table tr[data-feature="{feature}"]')
    return rows[0].text if rows else ""


driver = browser()
try:
    # Signed out, a page sends the browser to the sign-in page.
    driver.get(f"{BASE}/console/accounts")
    if path() != "/console/sign-in":
        fail(f"a page without a session should redirect to sign-in, got {path()}")
    check_page("sign-in")

    # A wrong secret is refused with the API's message, keyboard only (Enter submits).
    fill("client-id", ARGS["client_id"])
    fill("secret", "not-the-secret-0123456789")
    driver.find_element(By.ID, "secret").send_keys(Keys.ENTER)
    wait("the refusal", lambda: driver.find_elements(By.ID, "sign-in-error"))
    if "invalid client ID or secret" not in driver.find_element(By.ID, "sign-in-error").text:
        fail("a wrong secret should be refused with the API's message")
    # The refusal's 401 is in the browser's log by design; drain it.
    driver.get_log("browser")

    fill("client-id", ARGS["client_id"])
    fill("secret", ARGS["secret"])
    submit("sign-in-environment")
    if path() != "/console/accounts":
        fail(f"signing in should land on the accounts, got {path()}")
    check_page("accounts-empty")

    # An account tree: acme, with acme-eu under it.
    create_account("acme", "Acme Corp")
    create_account("acme-eu", "Acme Europe", parent="acme")
    driver.get(f"{BASE}/console/accounts/acme")
    tree = driver.find_element(By.ID, "account-tree").text
    if "Acme Europe" not in tree:
        fail(f"acme's tree should hold acme-eu: {tree}")

    # A feature and a plan holding it, inherited by sub-accounts.
    driver.get(f"{BASE}/console/features")
    fill("feature-key", "sso")
    fill("feature-name", "Single sign-on")
    submit("create-feature")
    if "sso" not in driver.find_element(By.ID, "features-table").text:
        fail("the feature should be listed")
    check_page("features")

    driver.get(f"{BASE}/console/plans")
    fill("plan-name", "Pro")
    fill("plan-key", "pro")
    driver.find_element(By.CSS_SELECTOR, 'input[name="feature"][value="sso"]').click()
    driver.find_element(By.ID, "plan-inherit").click()
    submit("create-plan")
    if "sso" not in driver.find_element(By.ID, "plans-table").text:
        fail("the plan should list its feature")
    check_page("plans")

    # Catalogue edits: the feature renamed, the plan renamed (its key and feature kept).
    driver.find_element(By.CSS_SELECTOR, 'a[aria-label="Edit plan pro"]').click()
    wait("the plan's page", lambda: path().startswith("/console/plans/"))
    fill("plan-name", "Pro plan")
    check_page("plan-edit")
    submit("save-plan")
    if "Pro plan" not in driver.find_element(By.ID, "plans-table").text:
        fail("the plan's new name should be listed")
    driver.get(f"{BASE}/console/features")
    driver.find_element(By.CSS_SELECTOR, 'a[aria-label="Edit feature sso"]').click()
    wait("the feature's page", lambda: path().startswith("/console/features/"))
    fill("feature-name", "Single sign-on (SAML)")
    submit("save-feature")
    if "Single sign-on (SAML)" not in driver.find_element(By.ID, "features-table").text:
        fail("the feature's new name should be listed")

    # A flag on sso, off (its off treatment keeps sso on), with a rule built row by row
    # without any script: a rule, a second condition added then removed, a refused operand
    # shown with the API's message, then saved.
    driver.get(f"{BASE}/console/flags")
    fill("flag-name", "SSO rollout")
    Select(driver.find_element(By.ID, "flag-off")).select_by_value("true")
    submit("create-flag")
    if not path().startswith("/console/flags/"):
        fail(f"creating a flag should open it, got {path()}: {driver.find_element(By.TAG_NAME, 'main').text}")
    submit("add-rule")
    fill("c1-1-attribute", "seats")
    Select(driver.find_element(By.ID, "c1-1-op")).select_by_value("greater_than")
    fill("c1-1-value", "many")
    submit("add-condition-1")
    if not driver.find_elements(By.ID, "c1-2-attribute"):
        fail("adding a condition should add its row")
    if driver.find_element(By.ID, "c1-1-value").get_attribute("value") != "many":
        fail("adding a row should keep what was typed")
    remove = driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Remove condition 1.2"]')
    old = driver.find_element(By.TAG_NAME, "html")
    remove.click()
    wait("the row removed", lambda: old.id != driver.find_element(By.TAG_NAME, "html").id)
    submit("save-flag")
    if "expected a number" not in driver.find_element(By.ID, "flag-error").text:
        fail(f"a bad operand should be refused with the API's message: {driver.find_element(By.TAG_NAME, 'main').text}")
    # The refusal's 400 is in the browser's log by design; drain it.
    driver.get_log("browser")
    fill("c1-1-value", "10")
    submit("save-flag")
    if driver.find_elements(By.ID, "flag-error") or driver.find_element(By.ID, "c1-1-value").get_attribute("value") != "10":
        fail(f"the fixed rule should save: {driver.find_element(By.TAG_NAME, 'main').text}")
    check_page("flag-rules")

    # A route policy: added, then edited.
    driver.get(f"{BASE}/console/route-policies")
    fill("route-method", "GET")
    fill("route-path", "/reports/**")
    fill("route-features", "sso")
    submit("create-route")
    if "/reports/**" not in driver.find_element(By.ID, "routes-table").text:
        fail(f"the route should be listed: {driver.find_element(By.TAG_NAME, 'main').text}")
    driver.find_element(By.CSS_SELECTOR, 'a[aria-label="Edit route GET /reports/**"]').click()
    wait("the route's page", lambda: path().startswith("/console/route-policies/"))
    Select(driver.find_element(By.ID, "route-policy")).select_by_value("deny")
    fill("route-features", "")
    submit("save-route")
    if "deny" not in driver.find_element(By.ID, "routes-table").text:
        fail("the route should now deny")
    check_page("route-policies")

    # A webhook endpoint: its secret shown once, then its page (deliveries, edit, rotate).
    driver.get(f"{BASE}/console/webhooks")
    fill("webhook-url", "http://127.0.0.1:9/hooks")
    fill("webhook-events", "tenantry.grant.created.v1")
    submit("create-webhook")
    if not driver.find_element(By.ID, "webhook-secret").text.strip():
        fail(f"the new endpoint's secret should be shown: {driver.find_element(By.TAG_NAME, 'main').text}")
    check_page("webhook-secret")
    driver.find_element(By.ID, "to-webhook").click()
    wait("the endpoint's page", lambda: driver.find_elements(By.ID, "save-webhook"))
    if driver.find_elements(By.ID, "webhook-secret"):
        fail("the endpoint's page must not show the secret again")
    check_page("webhook")

    # The audit trail, filtered: the flag's writes.
    driver.get(f"{BASE}/console/audit")
    fill("audit-resourceType", "flag")
    submit("audit-filter")
    if "flag" not in driver.find_element(By.ID, "audit-table").text:
        fail(f"the flag's audit entries should be listed: {driver.find_element(By.TAG_NAME, 'main').text}")
    check_page("audit")

    # What if acme got pro? Previewed (sso gained, nothing written), then applied: sso
    # entitled, with its reason; acme-eu inherits it.
    driver.get(f"{BASE}/console/accounts/acme")
    submit("preview")
    if "sso" not in driver.find_element(By.ID, "gained-list").text:
        fail(f"granting pro should preview sso gained: {driver.find_element(By.TAG_NAME, 'main').text}")
    check_page("what-if")
    submit("apply")
    if path() != "/console/accounts/acme":
        fail(f"applying should return to the account, got {path()}")
    row = entitlement_row("sso")
    if "yes" not in row or "plan pro granted to this account" not in row:
        fail(f"acme should hold sso through pro: {row!r}")
    if "active" not in driver.find_element(By.ID, "grants-table").text:
        fail("the grant should be listed as active")
    check_page("account-entitled")

    # The grant extended: a new expiry, shown in the history.
    driver.find_element(By.CSS_SELECTOR, "#grants-table details summary").click()
    expiry = driver.find_element(By.CSS_SELECTOR, 'input[aria-label="New expiry of the grant of pro"]')
    # Date inputs take typed dates in the browser's locale; the value is set as a user's pick.
    driver.execute_script("arguments[0].value = '2030-01-31'", expiry)
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Change the dates of the grant of pro"]').click()
    wait("the page after extending", lambda: old.id != driver.find_element(By.TAG_NAME, "html").id)
    if "2030-01-31" not in driver.find_element(By.ID, "grants-table").text:
        fail(f"the extended grant should expire on 2030-01-31: {driver.find_element(By.ID, 'grants-table').text}")

    def inherited():
        driver.get(f"{BASE}/console/accounts/acme-eu")
        return "inherited" in entitlement_row("sso")

    wait("acme-eu inheriting sso from acme", inherited, within=15)
    check_page("sub-account-inherits")

    # The search narrows the list as one types (htmx, under the CSP).
    driver.get(f"{BASE}/console/accounts")
    driver.find_element(By.ID, "account-search").send_keys("europe")

    def narrowed():
        text = driver.find_element(By.ID, "account-results").text
        return "Acme Europe" in text and "Acme Corp" not in text

    wait("the search narrowing the list", narrowed)
    check_page("accounts-search")

    # An import: a CSV uploaded, its progress followed on the page (htmx polling) to the end,
    # the bad row reported on its own.
    upload = os.path.join(tempfile.mkdtemp(prefix="tenantry-import-"), "accounts.csv")
    with open(upload, "w", encoding="utf-8") as f:
        f.write("tenantId,name\ninitech,Initech\nhooli,\"Hooli, Inc.\"\nbad id,Broken\n")
    driver.get(f"{BASE}/console/imports")
    check_page("imports")
    driver.find_element(By.ID, "import-file").send_keys(upload)
    submit("start-import")
    if not path().startswith("/console/imports/"):
        fail(f"starting an import should show its progress, got {path()}: {driver.find_element(By.TAG_NAME, 'main').text}")
    wait(
        "the import to complete",
        lambda: driver.find_element(By.ID, "import-state").text == "completed",
        within=20,
    )
    progress = driver.find_element(By.ID, "import-progress")
    if progress.get_attribute("value") != progress.get_attribute("max") or progress.get_attribute("max") != "3":
        fail("the progress bar should reach 3 of 3")
    if driver.find_element(By.ID, "import-created").text != "2" or "bad id" not in driver.find_element(By.ID, "import-errors").text:
        fail(f"two accounts created, the bad row refused: {driver.find_element(By.TAG_NAME, 'main').text}")
    check_page("import-done")

    # The imported accounts ticked on the list and granted pro in one form, each reported.
    driver.get(f"{BASE}/console/accounts")
    for name in ["Initech", "Hooli, Inc."]:
        driver.find_element(By.CSS_SELECTOR, f'input[aria-label="Select {name}"]').click()
    submit("grant-selection")
    summary = driver.find_element(By.ID, "selection-summary").text
    results = driver.find_element(By.ID, "selection-results").text
    if "Granted to all 2" not in summary or "initech" not in results or "hooli" not in results:
        fail(f"both ticked accounts should be granted: {summary} / {results}")
    check_page("granted-selection")

    # Edit, metadata, revoke (sso then lost, with the check's reason), detach, delete.
    driver.get(f"{BASE}/console/accounts/acme")
    fill("edit-name", "Acme Corporation")
    submit("save-account")
    if driver.find_element(By.TAG_NAME, "h1").text != "Acme Corporation":
        fail("the new name should show")
    fill("metadata-key", "tier")
    fill("metadata-value", "gold")
    submit("add-metadata")
    if '"gold"' not in driver.find_element(By.TAG_NAME, "main").text:
        fail("the metadata key should show")
    # Found by its metadata: `key=value` in the same search box.
    driver.get(f"{BASE}/console/accounts")
    driver.find_element(By.ID, "account-search").send_keys("tier=gold")

    def found_by_metadata():
        text = driver.find_element(By.ID, "account-results").text
        return "Acme Corporation" in text and "Initech" not in text and "Acme Europe" not in text

    wait("the search by metadata", found_by_metadata)
    check_page("accounts-metadata-search")
    driver.get(f"{BASE}/console/accounts/acme")
    # Settings and members on the account's page.
    fill("setting-timezone", "Europe/Berlin")
    submit("save-settings")
    if driver.find_element(By.ID, "setting-timezone").get_attribute("value") != "Europe/Berlin":
        fail("the saved time zone should show")
    fill("member-user", "alice")
    submit("add-member")
    if "alice" not in driver.find_element(By.ID, "members-list").text:
        fail("the new member should be listed")
    revoke = driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Revoke grant of pro"]')
    old = driver.find_element(By.TAG_NAME, "html")
    revoke.click()
    wait("the page after revoking", lambda: old.id != driver.find_element(By.TAG_NAME, "html").id)
    row = entitlement_row("sso")
    if "no" not in row or "PLAN_REVOKED" not in row:
        fail(f"a revoked grant should leave sso not entitled, saying why: {row!r}")
    if "revoked" not in driver.find_element(By.ID, "grants-table").text:
        fail("the grant history should show the revocation")
    check_page("account-revoked")
    detach = driver.find_element(By.CSS_SELECTOR, 'button[aria-label="Detach Acme Europe"]')
    old = driver.find_element(By.TAG_NAME, "html")
    detach.click()
    wait("the page after detaching", lambda: old.id != driver.find_element(By.TAG_NAME, "html").id)
    if "Acme Europe" in driver.find_element(By.ID, "account-tree").text:
        fail("a detached sub-account should leave the tree")
    driver.get(f"{BASE}/console/accounts/acme-eu")
    submit("delete-account")
    if path() != "/console/accounts" or "Acme Europe" in driver.find_element(By.ID, "account-results").text:
        fail("a deleted account should leave the list")
    # And reactivated under its ID.
    fill("reactivate-id", "acme-eu")
    fill("reactivate-name", "Acme Europe")
    submit("reactivate")
    if path() != "/console/accounts/acme-eu":
        fail(f"reactivating should open the account, got {path()}: {driver.find_element(By.TAG_NAME, 'main').text}")

    # A phone-sized window: the account page fits 360 px without sideways scrolling.
    driver.set_window_size(360, 800)
    driver.get(f"{BASE}/console/accounts/acme")
    width = driver.execute_script("return document.documentElement.scrollWidth")
    if width > 360:
        fail(f"the account page is {width} px wide at a 360 px window")
    check_page("account-360px")
    driver.set_window_size(1280, 900)

    # Signed out, the console refuses again.
    submit("sign-out")
    if path() != "/console/sign-in":
        fail(f"signing out should land on the sign-in page, got {path()}")
    driver.get(f"{BASE}/console/accounts/acme")
    if path() != "/console/sign-in":
        fail(f"after signing out a page should redirect to sign-in, got {path()}")
    check_page("signed-out")
finally:
    driver.quit()

print(json.dumps(seen))
