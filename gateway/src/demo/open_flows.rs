//! The smoke checks of a flow opened through the control plane only (issue "A data owner opens
//! a new flow end to end without code"): SPF Finances registers a cadastre source (production
//! side: the demo's cadastre sandbox; test side: the sandbox the gateway generates from the
//! layout) and its cadastral-income service, DIV registers `div.history` from its XSD, a new
//! notary's office is onboarded from its own certificate requests, two conventions go through
//! their test phase into production, and the notary gets exactly the granted fields — every
//! call recorded in the trail. Each run registers its own source, service, organisation and
//! instruments (named after the run), so the smoke can run again on the same directory;
//! `div.history` is registered by the first run and used by the next.

use anyhow::Context as _;
use http::Method;
use policies::ids::Kbo;
use serde_json::{Value, json};

use super::{Check, Demo, post};
use crate::client::{HttpVersion, MtlsClient};

const DEED: &str = "NOTARIAL_DEED";

impl Demo {
    pub(super) async fn smoke_open_flows(&self, checks: &mut Vec<Check>) -> anyhow::Result<()> {
        let cadastre = self
            .sandboxes
            .iter()
            .find(|(n, _)| *n == "cadastre")
            .map(|(_, s)| s.url())
            .context("no cadastre sandbox")?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let run = stamp % 1_000_000;
        let (source, path) = (format!("cadastre-{run}"), format!("/cadastre/{run}/cadastral-income"));
        let service_id = format!("{source}.cadastral-income");
        let admin = self.control_client("admin")?;
        let spf = self.control_client("spf-finances")?;
        let div = self.control_client("div")?;
        let ok = |expected: u16| move |a: crate::client::Answer| (a.status == expected, a.status.to_string());
        let body = |v: &Value| v.to_string();

        // The notary's office: registered by the integrator, its certificate from its request.
        let kbo = Kbo::from_first8(10_000_000 + u32::try_from(run).unwrap_or(0) * 7).context("no enterprise number")?;
        let digits = kbo.to_string();
        let org = json!({ "kbo": digits, "name": format!("Notary office {run} (synthetic)"), "kind": "company" });
        let got = post(&admin, Method::POST, "/organisations", &[], body(&org)).await;
        checks.push(Check::new("the integrator registers a new notary's office".into(), "201", got.map(ok(201))));
        let certificates = format!("/organisations/{digits}/certificates");
        let (request, key) = certs::csr(&certs::ClientSpec::org("Notary office (synthetic)", kbo))?;
        let got = post(&admin, Method::POST, &certificates, &[], body(&json!({ "csr": request }))).await;
        let cert = got
            .as_ref()
            .ok()
            .and_then(|a| a.json().ok())
            .and_then(|v| v["item"]["certificate"].as_str().map(str::to_owned));
        checks.push(Check::new(
            "the gateway signs the notary's certificate request".into(),
            "201 with a certificate",
            got.map(|a| (a.status == 201 && cert.is_some(), a.status.to_string())),
        ));
        let cert = cert.context("the notary has no certificate")?;
        let ca = self.pki.ca.cert_pem();
        let client = |addr, c: &str, k: &str| {
            MtlsClient::new(addr, ca.as_bytes(), Some((c.as_bytes(), k.as_bytes())), HttpVersion::Http1)
        };
        let control_addr = self.gateway.control_addr.context("the control plane is off")?;
        let notary_control = client(control_addr, &cert, &key)?;
        let notary = client(self.gateway.data_addr, &cert, &key)?;
        let mut spec = certs::ClientSpec::org("Notary office test application", kbo);
        spec.environment = Some(certs::Environment::Integration);
        let (request, int_key) = certs::csr(&spec)?;
        let got = post(&notary_control, Method::POST, &certificates, &[], body(&json!({ "csr": request }))).await?;
        let int_cert = got.json().ok().and_then(|v| v["item"]["certificate"].as_str().map(str::to_owned));
        let notary_test = client(self.gateway.data_addr, &int_cert.context("no test certificate")?, &int_key)?;

        // SPF Finances registers its source and the service, with its imposed layout.
        let src = json!({ "id": source, "name": "Cadastre (SPF Finances)", "owner": "0308350231",
            "upstream": { "url": cadastre, "test": "sandbox" } });
        let got = post(&spf, Method::POST, "/sources", &[], body(&src)).await;
        checks.push(Check::new("SPF Finances registers its cadastre and its upstream".into(), "201", got.map(ok(201))));
        let mut service = adapters::cadastre::registration();
        service["id"] = service_id.clone().into();
        service["source"] = source.clone().into();
        service["exposure"]["path"] = path.clone().into();
        let mut bad = service.clone();
        bad["exposure"]["catalogue"][1]["path"] = "/parcels/*/plot".into();
        let got = post(&spf, Method::POST, "/services", &[], body(&bad)).await;
        checks.push(Check::new(
            "a registration whose catalogue names what the layout lacks".into(),
            "422 REGISTRATION_INVALID",
            got.map(|a| {
                (a.code() == Some("REGISTRATION_INVALID"), format!("{} {}", a.status, a.code().unwrap_or("-")))
            }),
        ));
        let got = post(&spf, Method::POST, "/services", &[], body(&service)).await;
        checks.push(Check::new(
            "SPF Finances registers the cadastral-income service (JSON Schema)".into(),
            "201",
            got.map(ok(201)),
        ));
        // DIV registers div.history from its XSD (once per demo directory).
        let listed = post(&div, Method::GET, "/services", &[], String::new()).await?;
        if !listed.text().contains("\"div.history\"") {
            let history = adapters::div::sandbox::history_registration(adapters::div::sandbox::HISTORY_XSD);
            let got = post(&div, Method::POST, "/services", &[], body(&history)).await;
            checks.push(Check::new("DIV registers div.history from its XSD".into(), "201", got.map(ok(201))));
        }

        // The instruments and their procedure.
        let deliberation = format!("CSI/AF/52/{run}");
        let (fin_conv, div_conv) = (format!("FIN/CONV/{run}"), format!("DIV/CONV/H/{run}"));
        let d = json!({ "reference": deliberation, "kind": "deliberation", "title": "cadastral income for notarial deeds (demo)",
            "authority": "CSI-AF", "number": format!("52/{run}"), "date": "2026-11-20", "source": source, "status": "active" });
        post(&spf, Method::POST, "/instruments", &[], body(&d)).await?;
        let convention = |reference: &str, parent: &str, service: &str, fields: Value| {
            json!({ "reference": reference, "kind": "convention", "parent": parent, "title": format!("Convention {reference} (demo)"),
                "grants": [{ "id": format!("{reference}-notary"), "recipient": { "org": digits }, "service": service,
                             "purposes": [DEED], "fields": fields }] })
        };
        let c = convention(&fin_conv, &deliberation, &service_id, json!(["parcel", "cadastralIncome"]));
        post(&spf, Method::POST, "/instruments", &[], body(&c)).await?;
        let c = convention(&div_conv, "CSI/AF/18/2023", "div.history", json!(["periods", "holders"]));
        post(&div, Method::POST, "/instruments", &[], body(&c)).await?;
        for (owner, reference) in [(&spf, &fin_conv), (&div, &div_conv)] {
            let steps = format!("/instruments/{}/transitions", reference.replace('/', "%2F"));
            let mut all = true;
            for (who, step) in [
                (owner, json!({ "to": "deliberation-received" })),
                (owner, json!({ "to": "convention-sent", "text_version": "2026.1", "layout_version": "v1" })),
                (
                    &notary_control,
                    json!({ "to": "signed-by-beneficiary", "signatory": { "name": "Notary N.", "capacity": "Notary" },
                            "contact": { "name": "Desk", "email": "desk@example.invalid", "phone": "+3220000001" } }),
                ),
                (owner, json!({ "to": "test-phase" })),
            ] {
                all &= post(who, Method::POST, &steps, &[], body(&step)).await.is_ok_and(|a| a.status == 200);
            }
            checks.push(Check::new(
                format!("convention {reference}: requested to test phase, each step by its party"),
                "200 at every step",
                Ok((all, if all { "200".into() } else { "a step refused".into() })),
            ));
        }

        // Test phase: the generated sandbox answers the test application.
        let mut d = [0u8; 11];
        let owner = adapters::synthetic::people(0xCAD, 1).first().context("no person")?.digits(&mut d).to_owned();
        let headers = |basis: &str| {
            vec![("x-legal-basis", basis.to_owned()), ("x-purpose", DEED.to_owned()), ("x-subject", owner.clone())]
        };
        let got = post(&notary_test, Method::GET, &path, &headers(&fin_conv), String::new()).await;
        checks.push(Check::new(
            "the notary's test application, test phase: the generated sandbox".into(),
            "200 with the granted fields only",
            got.map(|a| {
                let t = a.text();
                (a.status == 200 && t.contains("cadastralIncome") && !t.contains("municipality"), a.status.to_string())
            }),
        ));
        let got = post(&notary, Method::GET, &path, &headers(&fin_conv), String::new()).await;
        checks.push(Check::refusal(
            "the notary in production, test phase",
            "403 INSTRUMENT_NOT_ACTIVE",
            got,
            403,
            "INSTRUMENT_NOT_ACTIVE",
        ));

        // Production, after the data owners' countersignatures.
        for (owner, reference) in [(&spf, &fin_conv), (&div, &div_conv)] {
            let steps = format!("/instruments/{}/transitions", reference.replace('/', "%2F"));
            let step = json!({ "to": "active", "signatory": { "name": "Head of service", "capacity": "Director" } });
            post(owner, Method::POST, &steps, &[], body(&step)).await?;
        }
        let expected = adapters::cadastre::parcels(policies::ids::Niss::parse(&owner)?);
        let got = post(&notary, Method::GET, &path, &headers(&fin_conv), String::new()).await;
        checks.push(Check::new(
            "the notary in production: SPF Finances' cadastre".into(),
            "200, exactly parcel and cadastralIncome",
            got.map(|a| {
                let want: Vec<Value> = expected["parcels"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .map(|p| json!({ "parcel": p["parcel"], "cadastralIncome": p["cadastralIncome"] }))
                            .collect()
                    })
                    .unwrap_or_default();
                let ok = a.json().ok() == Some(json!({ "niss": owner, "parcels": want }));
                (a.status == 200 && ok, a.status.to_string())
            }),
        ));
        let (plate, _) = super::div_vehicle().context("the DIV sandbox has no vehicle")?;
        let h = vec![("x-legal-basis", div_conv.clone()), ("x-purpose", DEED.to_owned())];
        let got =
            post(&notary, Method::POST, "/div/history", &h, adapters::div::sandbox::history_by_plate(&plate)).await;
        checks.push(Check::new(
            "the notary reads a vehicle's holders (div.history, SOAP)".into(),
            "200 with entries",
            got.map(|a| (a.status == 200 && a.text().contains("<Holder>"), a.status.to_string())),
        ));

        // In the trail: the notary's calls, each with its service and instrument.
        let query = json!({ "caller": digits, "justification": { "case_reference": format!("DEMO/{run}"),
            "legal_ground": "demo of a new flow", "requested_by": "integrator" } });
        let got = post(&admin, Method::POST, "/audit/queries", &[], body(&query)).await;
        checks.push(Check::new(
            "the trail holds the notary's calls".into(),
            "4 records: the cadastre's three, div.history's one",
            got.map(|a| {
                let records = a.json().ok().and_then(|v| v["records"].as_array().cloned()).unwrap_or_default();
                let n = |s: &str| records.iter().filter(|r| r["service"] == s).count();
                (n(&service_id) == 3 && n("div.history") == 1, format!("{} and {}", n(&service_id), n("div.history")))
            }),
        ));
        Ok(())
    }
}
