"""The console in a real browser: Debian's chromium driven by Playwright, each organisation
signing in with its own client certificate. Run by tests/tests/console.rs, one phase at a time
(the test moves the gateway's clock between them); every step is checked on the page and then
through the control-plane API with the same certificate.

    python3 console_check.py PHASE CONFIG.json

CONFIG names the control listener (`base`), the CA, each organisation's certificate and key,
and what the test set up (the convention, the audit request, the exceptional access).
Screenshots of the main pages go to `screenshots` (docs/console/ when they are refreshed).
"""

import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

phase, config = sys.argv[1], json.load(open(sys.argv[2]))
BASE = config["base"]
SHOTS = config["screenshots"]
# Playwright presents the client certificate from its own TLS client: it must trust the CA.
os.environ["NODE_EXTRA_CA_CERTS"] = config["ca"]

from playwright.sync_api import expect, sync_playwright  # noqa: E402

expect.set_options(timeout=10_000)


def enc(reference):
    return urllib.parse.quote(reference, safe="")


def http(who, path, method="GET", data=None, headers=None):
    """A request as `who` without a browser: (status, body text, headers)."""
    ctx = ssl.create_default_context(cafile=config["ca"])
    ctx.load_cert_chain(*config["certs"][who])
    req = urllib.request.Request(BASE + path, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def api(who, path):
    status, body, _ = http(who, path)
    assert status == 200, f"{who} GET {path}: {status} {body}"
    return json.loads(body)


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name), full_page=True)


def step_form(page, to):
    return page.locator("form.step", has=page.locator(f"input[name=to][value='{to}']"))


def move(page, to, reason=None, **evidence):
    """Fills the lifecycle form that moves to `to` and submits it."""
    form = step_form(page, to)
    if reason:
        form.locator("textarea[name=reason]").fill(reason)
    if evidence:
        form.locator("summary").click()
        for name, value in evidence.items():
            form.locator(f"input[name={name}]").fill(value)
    form.locator("button[type=submit]").click()


def phase_one(browser):
    conv, inquiry, access = config["convention"], config["inquiry"], config["access"]
    context = {who: browser.new_context(
        client_certificates=[{"origin": BASE, "certPath": c, "keyPath": k}],
        locale="en-GB", viewport={"width": 1280, "height": 900})
        for who, (c, k) in config["certs"].items()}
    div = context["div"].new_page()

    # The data owner signs in with its certificate: the page names it, and no script runs.
    r = div.goto(BASE + "/console")
    assert r.status == 200, r.status
    csp = r.headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "script-src" not in csp, csp
    expect(div.locator(".who")).to_contain_text(config["kbo"]["div"])
    assert div.locator("script").count() == 0
    shot(div, "home.png")
    # The same page in French, from the browser's language.
    _, french, _ = http("div", "/console", headers={"Accept-Language": "fr-BE,fr;q=0.9"})
    assert '<html lang="fr">' in french and "Connecté en tant que" in french, french[:400]

    # Its sources and services, and only its own.
    r = div.goto(BASE + "/console/sources")
    assert r.status == 200, r.status
    expect(div.locator("#source-div")).to_contain_text("div.vehicle")
    assert div.locator("section.card[id^=source-]").count() == 1, "a data owner sees only its sources"
    shot(div, "sources.png")

    # A third party's certificate sees none of it: the 403 page.
    bank = context["bank-a"].new_page()
    r = bank.goto(BASE + "/console/sources")
    assert r.status == 403, r.status
    expect(bank.locator("main")).to_contain_text("Only the data owner of a source")
    shot(bank, "forbidden.png")
    r = bank.goto(BASE + f"/console/instruments/{enc(conv)}")
    assert r.status == 403, f"another organisation's convention: {r.status}"

    # The convention through its lifecycle, each step by the organisation the procedure names.
    div.goto(BASE + "/console/instruments")
    div.get_by_role("link", name=conv).click()
    expect(div.locator("#state")).to_have_text("requested")
    move(div, "deliberation-received", "copy of the deliberation received",
         document_title="Deliberation AF 31/2026", document_reference=config["deliberation"])
    expect(div.locator("#state")).to_have_text("deliberation-received")
    assert api("div", f"/instruments/{enc(conv)}")["state_or_status"] == "deliberation-received"
    move(div, "convention-sent", text_version="DIV standard convention 2026.1",
         layout_version="div.vehicle.xsd 2023-09", document_title="Convention, two copies",
         document_reference="DIV-CONV-2026-7")
    expect(div.locator("#state")).to_have_text("convention-sent")
    # The beneficiary signs with its own certificate; the data owner has no such button that works.
    fleet = context["fleet"].new_page()
    fleet.goto(BASE + f"/console/instruments/{enc(conv)}")
    move(fleet, "signed-by-beneficiary", signatory_name="An Peeters", signatory_capacity="Managing director",
         contact_name="Fleet desk", contact_email="fleet-desk@example.invalid", contact_phone="+3220000000")
    expect(fleet.locator("#state")).to_have_text("signed-by-beneficiary")
    assert api("fleet", f"/instruments/{enc(conv)}")["state_or_status"] == "signed-by-beneficiary"
    div.reload()
    move(div, "test-phase")
    expect(div.locator("#state")).to_have_text("test-phase")
    # The form says who gains access; without the countersignature the step is refused, and
    # the page shows the refusal's code.
    expect(step_form(div, "active").locator(".effect")).to_contain_text("Fleet lessor (synthetic)")
    expect(step_form(div, "active").locator(".effect")).to_contain_text("gain access")
    move(div, "active")
    expect(div.locator(".problem")).to_have_attribute("data-code", "TRANSITION_NOT_ALLOWED")
    assert api("div", f"/instruments/{enc(conv)}")["state_or_status"] == "test-phase"
    div.get_by_role("link", name="Back").click()
    move(div, "active", signatory_name="Head of DIV", signatory_capacity="Director")
    expect(div.locator("#state")).to_have_text("active")
    move(div, "published")
    expect(div.locator("#state")).to_have_text("published")
    view = api("div", f"/instruments/{enc(conv)}")
    assert view["state_or_status"] == "published" and view["effective_status"] == "active", view
    expect(div.locator("#matrix")).to_contain_text("plate, make, model, fuel")
    shot(div, "instrument.png")
    div.goto(BASE + "/console/instruments")
    shot(div, "instruments.png")

    # The publication now names the published convention; anyone may read it.
    bank.goto(BASE + "/console/publication")
    expect(bank.locator("#publication")).to_contain_text(conv)
    shot(bank, "publication.png")

    # Forms only from this console, for this certificate.
    path = f"/console/instruments/{enc(conv)}/transitions"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, body, _ = http("div", path, "POST", b"to=suspended&reason=x", form)
    assert status == 403 and "FORM_REJECTED" in body, (status, body)
    _, page, _ = http("div", f"/console/instruments/{enc(conv)}")
    token = page.split('name="csrf" value="')[1].split('"')[0]
    data = f"to=suspended&reason=x&csrf={token}".encode()
    status, body, _ = http("div", path, "POST", data, {**form, "Origin": "https://elsewhere.example"})
    assert status == 403 and "FORM_REJECTED" in body, (status, body)
    status, body, _ = http("div", path, "POST", data, {**form, "Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "FORM_REJECTED" in body, (status, body)
    _, other, _ = http("bank-a", "/console")
    stolen = other.split('name="csrf" value="')[1].split('"')[0] if 'name="csrf"' in other else "00"
    status, body, _ = http("div", path, "POST", f"to=suspended&reason=x&csrf={stolen}".encode(), form)
    assert status == 403 and "FORM_REJECTED" in body, (status, body)
    assert api("div", f"/instruments/{enc(conv)}")["state_or_status"] == "published", "nothing changed"

    # The privacy office approves an audit request.
    sig = context["sigedis"].new_page()
    sig.goto(BASE + "/console/audit-requests")
    card = sig.locator(f"#request-{inquiry}")
    expect(card.locator(".state")).to_have_text("submitted")
    card.locator("textarea[name=reason]").fill("official request checked; proportionate: one caller")
    card.get_by_role("button", name="Favourable", exact=True).click()
    expect(sig.locator(f"#request-{inquiry} .state")).to_have_text("approved")
    expect(sig.locator(f"#request-{inquiry} .advice")).to_contain_text("Favourable")
    assert api("prosecutor", f"/audit/requests/{inquiry}")["state"] == "approved"
    shot(sig, "audit-requests.png")
    # The requester downloads the result: the records of the calls it asked about.
    prosecutor = context["prosecutor"].new_page()
    prosecutor.goto(BASE + "/console/audit-requests")
    with prosecutor.expect_download() as download:
        prosecutor.locator(f"#request-{inquiry} a.download").click()
    result = json.load(open(download.value.path()))
    assert result["request"] == inquiry and result["count"] == len(result["records"]), result
    assert sorted(r["request_id"] for r in result["records"]) == ["pension-console-0", "pension-console-1"], result

    # The exceptional access: the privacy office's advice starts the 7 days.
    sig.goto(BASE + "/console/exceptional-accesses")
    card = sig.locator(f"#access-{access}")
    card.locator("input[name=reference]").fill("SIGEDIS/DPO/2026/12")
    card.get_by_role("button", name="Favourable", exact=True).click()
    expect(sig.locator(f"#access-{access} .countdown")).to_have_text("7 days until tacit approval")
    listed = [x for x in api("sigedis", "/exceptional-accesses")["items"] if x["id"] == access]
    assert listed and listed[0]["approval"].startswith("awaiting remarks"), listed
    assert listed[0]["approved_from"] == listed[0]["approval"].split("until ")[1].split(" ")[0], listed
    shot(sig, "exceptional-accesses.png")

    # DIV registers a service from its XSD: a catalogue naming what the XSD lacks is refused
    # with the API's code; the right one is registered and listed.
    history = config["history"]
    div.goto(BASE + "/console/sources")
    form = div.locator("#register form")
    form.locator("select[name=source]").select_option("div")
    for name, value in [("id", "div.history"), ("path", "/div/history"), ("upstream_path", history["upstream_path"]),
                        ("request_element", "GetVehicleHistoryRequest"),
                        ("response_element", "GetVehicleHistoryResponse")]:
        form.locator(f"input[name={name}]").fill(value)
    form.locator("select[name=subject]").select_option("none")
    form.locator("textarea[name=xsd]").fill(history["xsd"])
    catalogue = "\n".join(["Plate", "periods: Entry/From", "periods: Entry/Until", "holders: Entry/Holder",
                           "Entry/Holder/Id/Niss [person]", "Entry/Holder/Id/EnterpriseNumber [organisation]"])
    form.locator("textarea[name=catalogue]").fill(catalogue + "\nmileage: Entry/Mileage")
    form.get_by_role("button", name="Register").click()
    expect(div.locator(".problem")).to_have_attribute("data-code", "REGISTRATION_INVALID")
    assert "div.history" not in [s["id"] for s in api("div", "/services")["items"]]
    div.go_back()
    div.locator("#register textarea[name=catalogue]").fill(catalogue)
    div.locator("#register").get_by_role("button", name="Register").click()
    expect(div.locator("#source-div")).to_contain_text("div.history")
    registered = [s for s in api("div", "/services")["items"] if s["id"] == "div.history"]
    assert registered and registered[0]["exposure"]["path"] == "/div/history", registered
    # Its WSDL, on the public listener, from the link on the page.
    wsdl = div.locator("#source-div a", has_text="WSDL").get_attribute("href")
    assert wsdl.endswith("/public/services/div.history.wsdl"), wsdl
    ctx = ssl.create_default_context(cafile=config["ca"])
    with urllib.request.urlopen(wsdl, context=ctx) as r:
        assert b"GetVehicleHistoryRequest" in r.read()
    shot(div, "register-service.png")

    # An adhesion through its steps, each by its role: the CSI approves, the bank returns its
    # onboarding documents, Sigedis (the data owner) confirms.
    general, bank_kbo = config["general"], config["bank_a"]

    def adhesion_step(page, to, **fields):
        form = page.locator(f"#adhesion-{bank_kbo} form", has=page.locator(f"input[name=to][value='{to}']"))
        for name, value in fields.items():
            form.locator(f"input[name={name}]").fill(value)
        form.locator("button[type=submit]").click()
        expect(page.locator(f"#adhesion-{bank_kbo} .state")).to_have_text(to)

    def adhesion_state(who):
        return api(who, f"/instruments/{enc(general)}")["adhesions"][0]["state"]

    csi = context["csi-ssh"].new_page()
    csi.goto(BASE + f"/console/instruments/{enc(general)}")
    expect(csi.locator(f"#adhesion-{bank_kbo} .state")).to_have_text("requested")
    adhesion_step(csi, "approved", document_title="CSI decision", document_reference="CSI/SSH/26/010/FI/A-17")
    assert adhesion_state("csi-ssh") == "approved"
    bank.goto(BASE + f"/console/instruments/{enc(general)}")
    adhesion_step(bank, "onboarding", document_title="Onboarding DB2PDataTransfer", document_reference="ONB-7")
    assert adhesion_state("bank-a") == "onboarding"
    sig_owner = context["sigedis"].new_page()
    sig_owner.goto(BASE + f"/console/instruments/{enc(general)}")
    adhesion_step(sig_owner, "active")
    assert adhesion_state("sigedis") == "active"
    shot(sig_owner, "adhesion.png")

    # The change history shows what the console did, by whom.
    div.goto(BASE + "/console/changes")
    expect(div.locator("#changes")).to_contain_text("POST /services")
    expect(div.locator("#changes")).to_contain_text(conv)

    # The integrator's view of organisations and their certificates.
    admin = context["admin"].new_page()
    admin.goto(BASE + "/console/organisations")
    row = admin.locator("#organisations tr", has_text="Fleet lessor (synthetic)")
    expect(row.locator(".cert")).to_contain_text("days left")
    shot(admin, "organisations.png")

    # The last hour of the data plane, as GET /activity gives it; a data owner may not see it.
    last = api("admin", "/activity")
    assert last["calls"] >= 3 and last["refused"] >= 1, last
    admin.goto(BASE + "/console/activity")
    expect(admin.locator("#activity-calls")).to_have_text(str(last["calls"]))
    expect(admin.locator("#activity-refused")).to_have_text(str(last["refused"]))
    for r in last["refusals"]:
        expect(admin.locator("#refusals")).to_contain_text(r["code"])
    for s in last["services"]:
        expect(admin.locator("#services")).to_contain_text(s["service"])
    assert admin.locator("svg.chart rect.refused").count() >= 1
    expect(admin.locator("#ready")).to_have_text("yes" if last["readiness"]["ready"] else "no")
    for source in last["readiness"]["sources"]:
        expect(admin.locator("#source-readiness")).to_contain_text(source)
    shot(admin, "activity.png")
    r = div.goto(BASE + "/console/activity")
    assert r.status == 403, r.status


def phase_two(browser):
    """Seven days later on the gateway's clock: approved without anyone acting."""
    access = config["access"]
    c, k = config["certs"]["sigedis"]
    page = browser.new_context(client_certificates=[{"origin": BASE, "certPath": c, "keyPath": k}],
                               viewport={"width": 1280, "height": 900}).new_page()
    page.goto(BASE + "/console/exceptional-accesses")
    expect(page.locator(f"#access-{access} .approval")).to_contain_text("approved tacitly")
    assert page.locator(f"#access-{access} .countdown").count() == 0
    listed = [x for x in api("sigedis", "/exceptional-accesses")["items"] if x["id"] == access]
    assert listed[0]["approval"].startswith("approved tacitly"), listed


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=os.environ.get("PASSERELLE_CHROMIUM", "/usr/bin/chromium"),
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run"])
    try:
        {"one": phase_one, "two": phase_two}[phase](browser)
    finally:
        browser.close()
print("ok")
