//! Services registered through the control plane or a bundle, compiled into the same
//! [`ServiceDef`] the built-in adapters declare: the data plane checks, minimises and records
//! them with the same code.
//!
//! [`compile`] validates everything a registration states before it may take effect: the
//! layouts compile (JSON Schema 2020-12; XSD within [`crate::xsd`]'s subset), every catalogue
//! entry is somewhere in the answer layout, an XML answer has no part the catalogue leaves
//! unnamed (so nothing leaves without a decision), a field that a grant may withhold is
//! optional in the layout (the reduced answer still follows it), and the generated sandbox's
//! example answer passes the layout.
//!
//! A [`ServiceDef`] holds `'static` text, as the built-in catalogue does. A registered one's
//! strings and compiled XML shape are kept for the process's life, each distinct text once
//! ([`intern`], and a cache of compiled registrations keyed by their whole text): a policy
//! change that compiles the same registration again costs a lookup, and only a registration
//! whose text changed adds to what is kept.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use http::Method;
use policies::model::{CatalogueEntry, Dialect, Exposure, HttpMethod, Service, SubjectIn, SubjectRole};
use serde_json::Value;

use crate::layout::{Layout, LayoutDef, SubjectType};
use crate::xml::SoapLayout;
use crate::{Protocol, ServiceDef, SubjectKind, example};

/// Most catalogue entries of one service (the bits of a layout's kept-path mask).
pub const MAX_CATALOGUE: usize = crate::layout::MAX_KEPT_PATHS;

/// Text kept for the process's life, each distinct string once.
pub fn intern(s: &str) -> &'static str {
    static TABLE: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut t = TABLE.get_or_init(Mutex::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(k) = t.get(s) {
        return k;
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    t.insert(k);
    k
}

fn intern_slice<T: Clone>(v: Vec<T>) -> &'static [T] {
    Box::leak(v.into_boxed_slice())
}

/// A registered service, compiled.
#[derive(Debug, Clone)]
pub struct Registered {
    pub def: ServiceDef,
    /// What the generated sandbox answers (a valid example of the answer layout), as the
    /// source would send it: JSON, or a SOAP 1.1 envelope.
    pub example: bytes::Bytes,
    /// The XSD text of a SOAP service, as registered (for its WSDL).
    pub xsd: Option<&'static str>,
}

/// Compiles a registered service; the error names what is wrong and where.
pub fn compile(service: &Service) -> Result<Registered, String> {
    let Some(x) = &service.exposure else {
        return Err(format!("service {} has no exposure to compile", service.id));
    };
    static CACHE: OnceLock<Mutex<HashMap<String, Registered>>> = OnceLock::new();
    let key = serde_json::to_string(service).map_err(|e| e.to_string())?;
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(r) = cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
        return Ok(r.clone());
    }
    let r = compile_uncached(service, x)?;
    cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, r.clone());
    Ok(r)
}

fn compile_uncached(service: &Service, x: &Exposure) -> Result<Registered, String> {
    if !x.path.starts_with('/') || x.path.contains(['?', '#', ' ']) || x.path.contains("//") {
        return Err(format!("path {:?} must start with / and hold no query, fragment, space or //", x.path));
    }
    if !x.upstream_path.starts_with('/') || x.upstream_path.contains(['#', ' ']) {
        return Err(format!("upstream_path {:?} must start with / and hold no fragment or space", x.upstream_path));
    }
    if x.catalogue.len() > MAX_CATALOGUE {
        return Err(format!("the catalogue has {} entries; at most {MAX_CATALOGUE}", x.catalogue.len()));
    }
    // A field may stand at several places (a period's start and end); each place once.
    let mut places: Vec<&str> = x.catalogue.iter().map(|c| c.path.as_str()).collect();
    places.sort_unstable();
    if let Some(w) = places.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("catalogue path {} is listed twice", w[0]));
    }
    let mut named: Vec<&str> = x.catalogue.iter().filter_map(|c| c.field.as_deref()).collect();
    named.sort_unstable();
    named.dedup();
    let mut declared: Vec<&str> = service.fields.iter().map(String::as_str).collect();
    declared.sort_unstable();
    if declared != named {
        return Err(format!(
            "the service's fields ({}) are not the catalogue's fields ({})",
            declared.join(", "),
            named.join(", ")
        ));
    }
    let subject = match x.subject {
        SubjectIn::None => SubjectKind::None,
        SubjectIn::Niss => SubjectKind::Niss,
        SubjectIn::Kbo => SubjectKind::Kbo,
        SubjectIn::Association => SubjectKind::Association,
    };
    let mut def = ServiceDef {
        id: intern(&service.id),
        source: intern(&service.source),
        method: match x.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
        },
        path: intern(&x.path),
        upstream_path: intern(&x.upstream_path),
        subject,
        protocol: Protocol::Json,
        layout: None,
        soap: None,
    };
    let l = &x.layout;
    match x.dialect {
        Dialect::Json => {
            if l.xsd.is_some() || l.request_element.is_some() || l.response_element.is_some() {
                return Err("a JSON service's layout has request_schema and response_schema, not an XSD".into());
            }
            let response = l.response_schema.as_deref().ok_or("a JSON service's layout needs a response_schema")?;
            if x.method == HttpMethod::Get && l.request_schema.is_some() {
                return Err("a GET service takes no request body: leave request_schema out".into());
            }
            if x.method == HttpMethod::Post && l.request_schema.is_none() {
                return Err("a POST service needs a request_schema for its body".into());
            }
            let (def_json, example) = compile_json(l.request_schema.as_deref(), response, &x.catalogue)?;
            def.layout = Some(def_json);
            Ok(Registered { def, example, xsd: None })
        }
        Dialect::Soap => {
            if l.request_schema.is_some() || l.response_schema.is_some() {
                return Err("a SOAP service's layout is an xsd with request_element and response_element".into());
            }
            if x.method != HttpMethod::Post {
                return Err("a SOAP 1.1 service is called with POST".into());
            }
            let xsd = l.xsd.as_deref().ok_or("a SOAP service's layout needs an xsd")?;
            let req = l.request_element.as_deref().ok_or("a SOAP service's layout needs a request_element")?;
            let resp = l.response_element.as_deref().ok_or("a SOAP service's layout needs a response_element")?;
            let (soap, example) = compile_soap(xsd, req, resp, &x.catalogue)?;
            def.protocol = Protocol::Soap;
            def.soap = Some(soap);
            Ok(Registered { def, example, xsd: Some(intern(xsd)) })
        }
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn compile_json(
    request: Option<&str>,
    response: &str,
    catalogue: &[CatalogueEntry],
) -> Result<(LayoutDef, bytes::Bytes), String> {
    let parse = |what: &str, t: &str| -> Result<Value, String> {
        serde_json::from_str(t).map_err(|e| format!("the {what} schema is not JSON ({e})"))
    };
    let answer = parse("response", response)?;
    if let Some(r) = request {
        parse("request", r)?;
    }
    for c in catalogue {
        if !c.path.starts_with('/') {
            return Err(format!("catalogue path {:?} is not a JSON pointer (it starts with /)", c.path));
        }
        if !schema_has(&answer, &answer, &segments(&c.path), 0) {
            return Err(format!("catalogue path {} is nowhere in the response schema", c.path));
        }
    }
    // Kept whatever the grant: an entry without a field, unless it only marks a subject inside
    // a field (which then leaves with that field or not at all).
    let always: Vec<&'static str> = catalogue
        .iter()
        .filter(|c| c.field.is_none() && !(c.subject.is_some() && inside_field(catalogue, &segments(&c.path))))
        .map(|c| intern(&c.path))
        .collect();
    let fields: Vec<(&'static str, &'static str)> =
        catalogue.iter().filter_map(|c| c.field.as_deref().map(|f| (intern(f), intern(&c.path)))).collect();
    let subjects: Vec<(&'static str, SubjectType)> =
        catalogue.iter().filter_map(|c| c.subject.map(|s| (intern(&c.path), subject_type(s)))).collect();
    let identifiers = subjects
        .iter()
        .map(|(p, s)| {
            let kind = match s {
                SubjectType::Person => policies::ids::IdKind::Niss,
                SubjectType::Organisation => policies::ids::IdKind::Kbo,
            };
            (*p, kind)
        })
        .collect();
    let def = LayoutDef {
        request_schema: request.map(intern),
        response_schema: intern(response),
        always: intern_slice(always),
        fields: intern_slice(fields),
        subjects: intern_slice(subjects.clone()),
        identifiers: intern_slice(identifiers),
        fallback: None,
    };
    let layout = Layout::new(def).map_err(|e| format!("the {e}"))?;
    let mut value = example::json(&answer);
    for (path, s) in &subjects {
        example::set_subjects(&mut value, &segments(path), *s);
    }
    let text = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    let doc = crate::layout::parse_answer(&text).map_err(|e| format!("the generated example {e}"))?;
    layout.check(&doc).map_err(|why| {
        format!("the sandbox cannot generate a valid answer from this layout ({why}); add an `examples` entry there")
    })?;
    Ok((def, bytes::Bytes::from(text)))
}

fn subject_type(s: SubjectRole) -> SubjectType {
    match s {
        SubjectRole::Person => SubjectType::Person,
        SubjectRole::Organisation => SubjectType::Organisation,
    }
}

/// Whether the schema describes something at `segs` (`*`: an array's items), following local
/// `$ref`s and every branch of `allOf` / `anyOf` / `oneOf`.
fn schema_has(root: &Value, s: &Value, segs: &[&str], depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return r.strip_prefix('#').and_then(|p| root.pointer(p)).is_some_and(|t| schema_has(root, t, segs, depth + 1));
    }
    let Some((first, rest)) = segs.split_first() else { return true };
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(v) = s.get(k).and_then(Value::as_array)
            && v.iter().any(|b| schema_has(root, b, segs, depth + 1))
        {
            return true;
        }
    }
    if *first == "*" {
        return s.get("items").is_some_and(|i| schema_has(root, i, rest, depth + 1));
    }
    s.get("properties").and_then(|p| p.get(*first)).is_some_and(|p| schema_has(root, p, rest, depth + 1))
}

fn compile_soap(
    xsd: &str,
    request: &str,
    response: &str,
    catalogue: &[CatalogueEntry],
) -> Result<(SoapLayout, bytes::Bytes), String> {
    let schema = crate::xsd::compile(xsd)?;
    let get = |name: &str, what: &str| {
        schema.elements.get(name).ok_or_else(|| format!("the XSD has no global element {name} (the {what} element)"))
    };
    let (req, resp) = (get(request, "request")?, get(response, "response")?);
    let mut marks: HashMap<Vec<&str>, (Option<&'static str>, Option<SubjectType>)> = HashMap::new();
    for c in catalogue {
        let segs = segments(&c.path);
        let Some(d) = resp.find(&segs) else {
            return Err(format!("catalogue path {} is no element below {response}", c.path));
        };
        if c.field.is_some() && d.min > 0 && !inside_field(catalogue, &segs) {
            return Err(format!(
                "catalogue field '{}' at {} is required by the XSD (minOccurs 1): an answer without it would not \
                 follow the layout; make it optional",
                c.field.as_deref().unwrap_or_default(),
                c.path
            ));
        }
        if c.subject.is_some() && !matches!(d.kind, crate::xsd::DeclKind::Text(_)) {
            return Err(format!("catalogue path {} marks a subject but holds elements, not text", c.path));
        }
        marks.insert(segs, (c.field.as_deref().map(intern), c.subject.map(subject_type)));
    }
    // Every text element of the answer is decided: named by a catalogue entry or under one.
    let mut unnamed = Vec::new();
    leaves(resp, &mut Vec::new(), &mut |path| {
        if !(0..=path.len()).any(|i| marks.contains_key(&path[..i])) {
            unnamed.push(path.join("/"));
        }
    });
    if let Some(u) = unnamed.first() {
        return Err(format!(
            "element {u} of {response} is in no catalogue entry: name it as a field, or as always kept (an entry without field)"
        ));
    }
    let mark = |p: &[&str]| marks.get(p).copied().unwrap_or((None, None));
    let layout = SoapLayout {
        ns: intern(&schema.target_ns),
        request: req.freeze(&|_| (None, None)),
        response: resp.freeze(&mark),
    };
    let payload = example::xml(&layout.response, layout.ns);
    let text = crate::xml::envelope(&payload);
    layout.check_response(text.as_bytes()).map_err(|why| {
        format!("the sandbox cannot generate a valid answer from this XSD ({why}); simplify the pattern there")
    })?;
    Ok((layout, bytes::Bytes::from(text)))
}

/// Whether a field entry's path is a proper prefix of `segs`.
fn inside_field(catalogue: &[CatalogueEntry], segs: &[&str]) -> bool {
    (1..segs.len()).any(|i| under_field(catalogue, &segs[..i]))
}

fn under_field(catalogue: &[CatalogueEntry], prefix: &[&str]) -> bool {
    !prefix.is_empty() && catalogue.iter().any(|c| c.field.is_some() && segments(&c.path) == prefix)
}

fn leaves<'a>(d: &'a crate::xsd::Decl, path: &mut Vec<&'a str>, f: &mut impl FnMut(&[&str])) {
    match &d.kind {
        crate::xsd::DeclKind::Text(_) => f(path),
        crate::xsd::DeclKind::Seq(items) | crate::xsd::DeclKind::Choice(items) => {
            for i in items {
                path.push(&i.name);
                leaves(i, path, f);
                path.pop();
            }
        }
    }
}

/// Every path a set of registered services and the built-in catalogue take: a second one is
/// refused, naming both.
pub fn check_paths<'a>(services: impl IntoIterator<Item = &'a Service>) -> Result<(), String> {
    let mut taken: HashMap<String, String> =
        crate::catalogue().into_iter().map(|s| (s.path.to_owned(), s.id.to_owned())).collect();
    for s in services {
        let Some(x) = &s.exposure else { continue };
        if let Some(other) = taken.insert(x.path.clone(), s.id.clone()) {
            return Err(format!("path {} of service {} is already the path of service {other}", x.path, s.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn service(v: Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn cadastre() -> Value {
        let mut v = crate::cadastre::registration();
        v["fields"] = serde_json::json!(["parcel", "municipality", "cadastralIncome", "share", "coOwners"]);
        v
    }

    fn history() -> Value {
        let mut v = crate::div::sandbox::history_registration(crate::div::sandbox::HISTORY_XSD);
        v["fields"] = serde_json::json!(["periods", "holders"]);
        v
    }

    #[test]
    fn a_json_registration_checks_minimises_and_records_like_a_built_in_layout() {
        let r = compile(&service(cadastre())).unwrap();
        let layout = Layout::new(r.def.layout.unwrap()).unwrap();
        let owner = crate::synthetic::people(3, 1)[0];
        let text = serde_json::to_vec(&crate::cadastre::parcels(owner)).unwrap();
        let doc = crate::layout::parse_answer(&text).unwrap();
        layout.check(&doc).unwrap();
        let reduced = layout.minimise(doc, |f| f == "cadastralIncome");
        let out: Value = serde_json::from_slice(&crate::layout::write_answer(&reduced, 0)).unwrap();
        for p in out["parcels"].as_array().unwrap() {
            assert_eq!(p.as_object().unwrap().keys().collect::<Vec<_>>(), ["cadastralIncome"]);
        }
        // Only the owner the caller named leaves; co-owners only with their field.
        assert_eq!(layout.subjects(&reduced).len(), 1);
        // The generated sandbox's example follows the layout.
        let example = crate::layout::parse_answer(&r.example).unwrap();
        layout.check(&example).unwrap();
    }

    #[test]
    fn a_soap_registration_compiles_its_xsd_into_the_shape() {
        let r = compile(&service(history())).unwrap();
        let soap = r.def.soap.unwrap();
        let reg = crate::div::sandbox::Register::generate();
        let v = &reg.vehicles()[0];
        let payload = soap.check_response(crate::xml::envelope(&v.history).as_bytes()).unwrap();
        let reduced = crate::xml::minimise(payload, &soap.response, &|f| f == "periods").unwrap();
        let mut found = Vec::new();
        crate::xml::subjects(&reduced, &soap.response, &mut found);
        assert!(found.is_empty(), "no holder leaves without its field");
        let mut out = String::new();
        crate::xml::write(&reduced, &mut out);
        assert!(out.contains("<From>") && !out.contains("Holder"), "{out}");
        soap.check_request(crate::div::sandbox::history_by_plate(v.plate.as_str()).as_bytes()).unwrap();
        soap.check_response(&r.example).unwrap();
        // A holder's national number that matches the XSD's pattern but not mod 97 is refused.
        let person =
            reg.vehicles().iter().find(|v| matches!(v.holder, crate::div::sandbox::Holder::Person(_))).unwrap();
        let mut bad = person.history.clone();
        let entry = bad.children.iter_mut().rev().find(|c| c.name == "Entry").unwrap();
        let id = &mut entry.children.last_mut().unwrap().children[0].children[0];
        assert_eq!(id.name, "Niss");
        id.text = "85073003329".into();
        let e = soap.check_response(crate::xml::envelope(&bad).as_bytes()).unwrap_err();
        assert!(e.ends_with("Niss: the text is not a valid national number"), "{e}");
    }

    #[test]
    fn bad_registrations_are_refused_naming_what_and_where() {
        let cases: Vec<(Value, &str)> = vec![
            (
                {
                    let mut s = cadastre();
                    s["exposure"]["catalogue"][1]["path"] = "/parcels/*/plot".into();
                    s
                },
                "catalogue path /parcels/*/plot is nowhere in the response schema",
            ),
            (
                {
                    let mut s = cadastre();
                    s["fields"] = serde_json::json!(["parcel"]);
                    s
                },
                "are not the catalogue's fields",
            ),
            (
                {
                    let mut s = cadastre();
                    s["exposure"]["layout"]["response_schema"] = "{ not json".into();
                    s
                },
                "the response schema is not JSON",
            ),
            (
                {
                    let mut s = cadastre();
                    s["exposure"]["layout"]["response_schema"]["properties"]["niss"]["type"] = 12.into();
                    s
                },
                "the layout schema",
            ),
            (
                {
                    let mut s = cadastre();
                    s["exposure"]["path"] = "cadastre".into();
                    s
                },
                "must start with /",
            ),
            (
                {
                    let mut s = cadastre();
                    s["exposure"]["method"] = "POST".into();
                    s
                },
                "needs a request_schema",
            ),
            (
                {
                    let mut s = history();
                    s["exposure"]["layout"]["xsd"] = crate::div::sandbox::HISTORY_XSD
                        .replace(r#"<xs:element name="Name" type="tns:Text128"/>"#, "<xs:any/>")
                        .into();
                    s
                },
                "xs:complexType[@name='Holder']/xs:sequence is outside the subset",
            ),
            (
                {
                    let mut s = history();
                    s["exposure"]["catalogue"][1]["path"] = "Entry/Since".into();
                    s
                },
                "catalogue path Entry/Since is no element below GetVehicleHistoryResponse",
            ),
            (
                {
                    let mut s = history();
                    s["exposure"]["catalogue"].as_array_mut().unwrap().remove(0);
                    s
                },
                "element Plate of GetVehicleHistoryResponse is in no catalogue entry",
            ),
            (
                {
                    let mut s = history();
                    s["exposure"]["catalogue"][0]["field"] = "plate".into();
                    s["fields"] = serde_json::json!(["periods", "holders", "plate"]);
                    s
                },
                "catalogue field 'plate' at Plate is required by the XSD",
            ),
            (
                {
                    let mut s = history();
                    s["exposure"]["layout"]["response_element"] = "Answer".into();
                    s
                },
                "the XSD has no global element Answer",
            ),
        ];
        for (body, want) in cases {
            let e = compile(&service(body)).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        let taken = [service(history()), {
            let mut s = cadastre();
            s["exposure"]["path"] = "/div/vehicle".into();
            service(s)
        }];
        let e = check_paths(&taken).unwrap_err();
        assert!(
            e.contains(
                "path /div/vehicle of service cadastre.cadastral-income is already the path of service div.vehicle"
            ),
            "{e}"
        );
    }
}
