//! Imposed layouts of JSON services: the published JSON Schema an answer must follow, the place
//! of every grantable field in the answer, and where data subjects appear in it.
//!
//! The gateway checks a source's answer against its schema (a non-conforming answer never
//! leaves: `UPSTREAM_LAYOUT_VIOLATION`), then keeps only the granted fields (proportionality),
//! then reports which subjects left with the answer, for the audit record.
//!
//! Paths are JSON-pointer-like patterns where `*` stands for every element of an array:
//! `/plans/*/organiser`. Error messages name the path and the schema keyword that failed,
//! never a value: values are personal data.

use std::fmt;

use policies::ids::{Iban, IdKind, Kbo, Niss, Plate, VCode, Vin};

use crate::doc::{self, Doc, DocJson};
use crate::stream::{self, narrow};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// How a data subject found in an answer is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    Person,
    Organisation,
}

/// Where a source holds a *default* value and values *per public service* (the Flemish
/// account-number and contact-data sources): a value linked to the service the caller names
/// is what leaves; the default may stand in for it only where the citizen's consent scope
/// covers that service (art. 5/4, 7/3; DOMAIN.md §3). The gateway applies the rule, since it
/// is the gateway that holds the consent.
#[derive(Debug, Clone, Copy)]
pub struct Fallback {
    /// Where the request names the public service (a JSON pointer into the request body).
    pub service: &'static str,
    /// Where the answer holds the value linked to that service, if the citizen linked one.
    pub linked: &'static str,
    /// Where the answer holds the default value.
    pub default: &'static str,
}

/// Largest request body a JSON layout accepts; anything bigger is not a look-up.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// A JSON service's imposed layout, as the adapter declares it.
#[derive(Debug, Clone, Copy)]
pub struct LayoutDef {
    /// The request JSON Schema, for services that take a body; `None`: no body at all.
    pub request_schema: Option<&'static str>,
    /// The response JSON Schema (draft 2020-12), as published in `adapters/layouts/`.
    pub response_schema: &'static str,
    /// Paths always kept: the identifiers the caller itself named.
    pub always: &'static [&'static str],
    /// Each grantable field (as the policy bundles name it) and its path in the answer.
    pub fields: &'static [(&'static str, &'static str)],
    /// Where data subjects appear in an answer.
    pub subjects: &'static [(&'static str, SubjectType)],
    /// Identifiers in an answer and their kind: each must pass its check algorithm (a
    /// schema pattern checks the shape only), else the answer is a layout violation.
    pub identifiers: &'static [(&'static str, IdKind)],
    /// The default/per-service rule, for the sources that have one.
    pub fallback: Option<Fallback>,
}

/// A layout ready for use: the schemas compiled and the paths split once.
#[derive(Debug)]
pub struct Layout {
    def: LayoutDef,
    /// The answer schema, over answers read in place.
    validator: jsonschema::Validator<DocJson>,
    request: Option<jsonschema::Validator>,
    /// The always-kept paths, then each grantable field's: bit `i` of a [`Keep`] mask stands
    /// for `kept[i]`.
    kept: Vec<Path>,
    /// The mask of the always-kept paths.
    always: Keep,
    /// Each grantable field and its bit.
    fields: Vec<(&'static str, Keep)>,
    subjects: Vec<(Path, SubjectType)>,
    identifiers: Vec<(&'static str, Path, IdKind)>,
    /// The one-pass check and minimisation, where the schema allows it ([`crate::stream`]).
    plan: Option<stream::Plan>,
}

/// The data subjects found in an answer, each with how it is identified.
pub type Subjects = Vec<(SubjectType, String)>;

/// A path's segments: `/plans/*/organiser` is `["plans", "*", "organiser"]`.
type Path = Vec<&'static str>;

/// A set of a layout's kept paths, one bit each: minimisation narrows it from node to node
/// instead of building a list of paths per key.
type Keep = u64;

/// Most paths a layout may keep (always-kept and grantable together): the bits of [`Keep`].
pub const MAX_KEPT_PATHS: usize = Keep::BITS as usize;

/// Why a layout could not be built (a broken schema ships only through a bug).
#[derive(Debug, thiserror::Error)]
#[error("layout schema: {0}")]
pub struct LayoutError(String);

fn segments(path: &'static str) -> Path {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

impl Layout {
    pub fn new(def: LayoutDef) -> Result<Self, LayoutError> {
        let schema = |text: &str| serde_json::from_str::<Value>(text).map_err(|e| LayoutError(e.to_string()));
        let response = schema(def.response_schema)?;
        let validator =
            jsonschema::options_for::<DocJson>().build(&response).map_err(|e| LayoutError(e.to_string()))?;
        let request = (def.request_schema)
            .map(|text| jsonschema::validator_for(&schema(text)?).map_err(|e| LayoutError(e.to_string())))
            .transpose()?;
        let subject_paths: Vec<Path> = def.subjects.iter().map(|(p, _)| segments(p)).collect();
        let identifier_paths: Vec<Path> = def.identifiers.iter().map(|(p, _)| segments(p)).collect();
        let kept: Vec<Path> = def.always.iter().chain(def.fields.iter().map(|(_, p)| p)).map(|p| segments(p)).collect();
        if kept.len() > MAX_KEPT_PATHS {
            return Err(LayoutError(format!("{} kept paths; at most {MAX_KEPT_PATHS}", kept.len())));
        }
        let bit = |i: usize| -> Keep { 1 << i };
        let paths = stream::Paths { kept: &kept, subjects: &subject_paths, identifiers: &identifier_paths };
        // The default/per-service rule reads the answer as a tree.
        let plan = def.fallback.is_none().then(|| stream::Plan::new(&response, paths)).flatten();
        Ok(Layout {
            def,
            validator,
            request,
            kept,
            always: (0..def.always.len()).fold(0, |m, i| m | bit(i)),
            fields: def.fields.iter().enumerate().map(|(i, (f, _))| (*f, bit(def.always.len() + i))).collect(),
            subjects: def.subjects.iter().map(|(p, k)| (segments(p), *k)).collect(),
            identifiers: def.identifiers.iter().map(|(p, k)| (*p, segments(p), *k)).collect(),
            // The default/per-service rule reads the answer as a tree; more subject or
            // identifier paths than a mask holds are left to the tree path too.
            plan,
        })
    }

    pub fn def(&self) -> &LayoutDef {
        &self.def
    }

    /// Checks an answer against the schema; the error names the first offending path and the
    /// rule it breaks.
    pub fn check(&self, answer: &Doc<'_>) -> Result<(), String> {
        first_error(&self.validator, answer, "answer")?;
        for (path, segs, kind) in &self.identifiers {
            let mut bad = false;
            collect(answer, segs, &mut |v| bad |= v.as_str().is_some_and(|s| !valid(*kind, s)));
            if bad {
                return Err(format!("at {path} the answer carries an invalid {}", kind.as_str()));
            }
        }
        Ok(())
    }

    /// Checks a request body against the request layout: none at all where the layout takes
    /// none, else JSON following the request schema. Returns the parsed body.
    pub fn check_request(&self, body: &[u8]) -> Result<Option<Value>, String> {
        let Some(validator) = &self.request else {
            return if body.is_empty() {
                Ok(None)
            } else {
                Err("this service takes no request body: the subject goes in X-Subject".into())
            };
        };
        if body.is_empty() {
            return Err("this service takes a JSON request body and none was sent".into());
        }
        if body.len() > MAX_REQUEST_BYTES {
            return Err(format!("the request body is larger than this layout allows ({MAX_REQUEST_BYTES} bytes)"));
        }
        let value = parse_strict(body).map_err(|e| {
            let why = if e.is_data() { "repeats a key" } else { "is not JSON" };
            format!("the request body {why} (line {}, column {})", e.line(), e.column())
        })?;
        first_error(validator, &value, "request")?;
        Ok(Some(value))
    }

    /// Keeps only the always-kept paths and those of the granted fields, removing the rest in
    /// place (no part of the answer is copied or rebuilt).
    pub fn minimise<'a>(&self, mut answer: Doc<'a>, granted: impl Fn(&str) -> bool) -> Doc<'a> {
        let keep = self.keep(granted);
        if retain(&mut answer, &self.kept, 0, keep) { answer } else { Doc::Object(Vec::new()) }
    }

    /// The always-kept paths and those of the granted fields.
    fn keep(&self, granted: impl Fn(&str) -> bool) -> Keep {
        (self.fields.iter()).filter(|(f, _)| granted(f)).fold(self.always, |m, (_, b)| m | b)
    }

    /// Checks a source's answer and minimises it in one pass over its text, when that pass
    /// can decide ([`crate::stream`]): the bytes that leave, as [`write_answer`] writes them
    /// after [`parse_answer`], [`Layout::check`] and [`Layout::minimise`], and the subjects
    /// that leave with them, as [`Layout::subjects`] finds them. `None`: the answer must take
    /// that path, which decides every answer (and names the rule a refused one breaks).
    pub fn one_pass(&self, body: &[u8], granted: impl Fn(&str) -> bool) -> Option<(Vec<u8>, Subjects)> {
        let plan = self.plan.as_ref()?;
        let text = std::str::from_utf8(body).ok()?;
        let keep = self.keep(granted);
        let valid = |i: usize, s: &str| self.identifiers.get(i).is_some_and(|(_, _, kind)| valid(*kind, s));
        let (out, found) = plan.run(text, keep, &valid, body.len())?;
        Some((out, found.into_iter().map(|(i, s)| (self.subjects[i].1, s)).collect()))
    }

    /// Whether answers go through [`Layout::one_pass`] at all (for the tests).
    pub fn has_one_pass(&self) -> bool {
        self.plan.is_some()
    }

    /// The data subjects found in an answer (after minimisation: those that leave).
    pub fn subjects(&self, answer: &Doc<'_>) -> Vec<(SubjectType, String)> {
        let mut out = Vec::new();
        for (path, kind) in &self.subjects {
            collect(answer, path, &mut |v| {
                if let Some(s) = v.as_str() {
                    out.push((*kind, s.to_owned()));
                }
            });
        }
        out
    }
}

/// Reads a source's JSON answer in place (see [`crate::doc`]). The body is checked as UTF-8
/// once, as a whole. The error says what is wrong with it, never quoting it.
pub fn parse_answer(body: &[u8]) -> Result<Doc<'_>, &'static str> {
    let text = std::str::from_utf8(body).map_err(|_| "is not JSON (not UTF-8 text)")?;
    doc::parse(text).map_err(|e| if e.is_data() { "repeats a key in an object" } else { "is not JSON" })
}

/// Writes a checked and minimised answer. `hint` is the length of the answer it was cut from,
/// which it seldom exceeds: the buffer is allocated once.
pub fn write_answer(answer: &Doc<'_>, hint: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(hint);
    answer.write(&mut out);
    out
}

/// Parses JSON like `serde_json::from_slice::<Value>`, but refuses an object that repeats a
/// key. The body is forwarded to the source as received, so a key given twice would be checked
/// here in one reading (the last value wins in `Value`) and possibly used by the source in
/// another (the first): no such ambiguity passes the gateway. serde_json's nesting limit (128)
/// still applies.
pub fn parse_strict(body: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = de.deserialize_any(Strict)?;
    de.end()?;
    Ok(v)
}

/// Builds a [`Value`], refusing repeated keys.
struct Strict;

impl<'de> de::DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                // The key is the caller's own property name, but it is not repeated: it may
                // carry anything.
                return Err(de::Error::custom("an object repeats a key"));
            }
            let v = map.next_value_seed(Strict)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Whether `s` is a valid identifier of `kind` (check digits included).
pub fn valid(kind: IdKind, s: &str) -> bool {
    match kind {
        IdKind::Niss => Niss::parse(s).is_ok(),
        IdKind::Kbo => Kbo::parse(s).is_ok(),
        IdKind::Iban => Iban::parse(s).is_ok(),
        IdKind::Plate => Plate::parse(s).is_ok(),
        IdKind::Vin => Vin::parse(s).is_ok(),
        IdKind::VCode => VCode::parse(s).is_ok(),
    }
}

fn first_error<'i, F: jsonschema::json::Json>(
    validator: &'i jsonschema::Validator<F>,
    v: F::Node<'i>,
    what: &str,
) -> Result<(), String> {
    // The fast path builds no error; the errors are worked out only for a document that fails.
    if validator.is_valid(v.clone()) {
        return Ok(());
    }
    match validator.iter_errors(v).next() {
        None => Ok(()),
        Some(e) => {
            let path = e.instance_path().as_str();
            let at = if path.is_empty() { "the top" } else { path };
            // The caller is told which of its own properties the layout lacks; a source's answer
            // is not quoted at all (a source could key a map by a personal identifier).
            if let (jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected }, "request") =
                (e.kind(), what)
            {
                return Err(format!(
                    "at {at} the {what} breaks the layout's 'additionalProperties' rule: {} is not in the layout",
                    unexpected.join(", ")
                ));
            }
            Err(format!("at {at} the {what} breaks the layout's '{}' rule", e.kind().keyword()))
        }
    }
}

/// Keeps in place the parts of `v` (at `depth`) that the paths of `live` reach; a path that
/// ends at `v` keeps its whole subtree. Returns whether `v` itself stays: an object always
/// does (emptied, perhaps), an array only where a path enters its elements (with the elements
/// that stay), a scalar only where a path ends at it.
fn retain(v: &mut Doc<'_>, paths: &[Path], depth: usize, live: Keep) -> bool {
    let mut rest = live;
    while rest != 0 {
        let i = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        if paths[i].len() == depth {
            return true;
        }
    }
    match v {
        Doc::Object(members) => {
            members.retain_mut(|(k, child)| {
                let sub = narrow(paths, depth, live, k);
                sub != 0 && retain(child, paths, depth + 1, sub)
            });
            true
        }
        Doc::Array(items) => {
            let sub = narrow(paths, depth, live, "*");
            if sub == 0 {
                return false;
            }
            items.retain_mut(|i| retain(i, paths, depth + 1, sub));
            true
        }
        _ => false,
    }
}

fn collect<'v, 'a>(v: &'v Doc<'a>, path: &[&str], f: &mut impl FnMut(&'v Doc<'a>)) {
    let Some((first, rest)) = path.split_first() else {
        f(v);
        return;
    };
    match (v, *first) {
        (Doc::Array(items), "*") => items.iter().for_each(|i| collect(i, rest, f)),
        (Doc::Object(_), key) => {
            if let Some(c) = v.get(key) {
                collect(c, rest, f);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    const SCHEMA: &str = r#"{"type":"object","required":["id","items"],"additionalProperties":false,
        "properties":{"id":{"type":"string"},"secret":{"type":"string"},
        "items":{"type":"array","items":{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"},"who":{"type":"string"}}}}}}"#;

    fn layout() -> Layout {
        Layout::new(LayoutDef {
            request_schema: None,
            response_schema: SCHEMA,
            always: &["/id"],
            fields: &[("a", "/items/*/a"), ("b", "/items/*/b"), ("who", "/items/*/who"), ("secret", "/secret")],
            subjects: &[("/items/*/who", SubjectType::Person)],
            identifiers: &[("/items/*/who", IdKind::Niss)],
            fallback: None,
        })
        .unwrap()
    }

    /// A layout check of a `Value` (the tests write their answers with `json!`).
    fn check(l: &Layout, v: &Value) -> Result<(), String> {
        l.check(&Doc::from_value(v))
    }

    #[test]
    fn minimises_to_the_granted_fields() {
        let l = layout();
        let v =
            json!({"id": "x", "secret": "s", "items": [{"a": 1, "b": "q", "who": "85073003328"}, {"a": 2, "b": "r"}]});
        assert!(check(&l, &v).is_ok());
        let m = l.minimise(Doc::from_value(&v), |f| f == "a");
        assert_eq!(m.to_value(), json!({"id": "x", "items": [{"a": 1}, {"a": 2}]}));
        assert!(l.subjects(&m).is_empty(), "the person's id did not leave");
        let m = l.minimise(Doc::from_value(&v), |f| f == "who" || f == "secret");
        assert_eq!(m.to_value(), json!({"id": "x", "secret": "s", "items": [{"who": "85073003328"}, {}]}));
        assert_eq!(l.subjects(&m), vec![(SubjectType::Person, "85073003328".to_owned())]);
        // Nothing granted: the always-kept identifier only; an array no path enters goes.
        let m = l.minimise(Doc::from_value(&v), |_| false);
        assert_eq!(m.to_value(), json!({"id": "x"}));
        // Minimised in place, the members keep the source's order.
        let text = r#"{"secret":"s","items":[{"who":"85073003328","a":1}],"id":"x"}"#;
        let m = l.minimise(crate::doc::parse(text).unwrap(), |_| true);
        assert_eq!(serde_json::to_string(&m).unwrap(), text);
    }

    #[test]
    fn the_one_pass_minimises_as_the_tree_does_where_paths_enter_arrays_or_miss_them() {
        const NESTED: &str = r#"{"type":"object","additionalProperties":false,
            "properties":{"id":{"type":"string"},"list":{"type":"array","items":{"type":"object",
            "properties":{"a":{"type":"integer","minimum":-5},"b":{"type":["string","null"]},"who":{"type":"string"}}}},
            "grid":{"type":"array","items":{"type":"array","items":{"type":"number"}}},"free":{"type":"array"},
            "obj":{"type":"object","properties":{"inner":{"type":"boolean"},"deep":{"type":"object","properties":{"x":{"type":"string"}}}}}}}"#;
        let l = Layout::new(LayoutDef {
            request_schema: None,
            response_schema: NESTED,
            always: &["/id"],
            fields: &[
                ("a", "/list/*/a"),
                ("who", "/list/*/who"),
                ("grid", "/grid/first"),
                ("cells", "/grid/*/*"),
                ("inner", "/obj/inner"),
                ("x", "/obj/deep/x"),
                ("obj", "/obj"),
                ("free", "/free/*"),
            ],
            subjects: &[("/list/*/who", SubjectType::Person), ("/obj/deep/x", SubjectType::Organisation)],
            identifiers: &[("/list/*/who", IdKind::Niss)],
            fallback: None,
        })
        .unwrap();
        assert!(l.has_one_pass());
        let fields = ["a", "who", "grid", "cells", "inner", "x", "obj", "free"];
        let answers = [
            r#"{"id":"x","list":[{"a":1,"b":"q","who":"85073003328"},{"a":-5,"b":null},{}],"grid":[[1,2.5],[],[3e2]],
                "obj":{"inner":true,"deep":{"x":"0123456749"}},"free":[1,"a",null,true]}"#,
            r#"{"grid":[],"list":[],"obj":{},"id":"y"}"#,
            r#" { "id" : "z" , "grid" : [ [ 1 , -0.0 , 18446744073709551616 ] ] } "#,
            r#"{"id":"x","list":[{"a":-6}]}"#,
            r#"{"id":"x","list":[{"a":1.0}]}"#,
        ];
        for text in answers {
            for mask in 0..(1u32 << fields.len()) {
                let granted = |f: &str| fields.iter().position(|g| *g == f).is_some_and(|i| mask & (1 << i) != 0);
                let fast = l.one_pass(text.as_bytes(), granted);
                let slow = parse_answer(text.as_bytes()).ok().filter(|d| l.check(d).is_ok()).map(|d| {
                    let m = l.minimise(d, granted);
                    (write_answer(&m, 0), l.subjects(&m))
                });
                if fast.is_some() {
                    assert_eq!(fast, slow, "{text} {mask:b}");
                }
            }
        }
        // Ordinary answers are decided by the pass; a minimum broken or an integer written as a
        // fraction is left to the tree.
        for (i, taken) in [true, true, true, false, false].into_iter().enumerate() {
            assert_eq!(l.one_pass(answers[i].as_bytes(), |_| true).is_some(), taken, "{}", answers[i]);
        }
    }

    #[test]
    fn layout_errors_name_the_path_not_the_value() {
        let l = layout();
        let e = check(&l, &json!({"id": "x", "items": [{"a": "85073003328"}]})).unwrap_err();
        assert_eq!(e, "at /items/0/a the answer breaks the layout's 'type' rule");
        let e = check(&l, &json!({"id": "x", "items": [], "extra": 1})).unwrap_err();
        assert!(e.contains("additionalProperties"), "{e}");
        let e = check(&l, &json!({"items": []})).unwrap_err();
        assert!(e.contains("the top") && e.contains("required"), "{e}");
        // The shape is right, the check digits are not.
        let e = check(&l, &json!({"id": "x", "items": [{"who": "85073003328"}, {"who": "85073003329"}]})).unwrap_err();
        assert_eq!(e, "at /items/*/who the answer carries an invalid national number (NISS/BIS)");
    }

    #[test]
    fn strict_parsing_is_serde_json_without_repeated_keys() {
        for text in
            [r#"{"a":1,"b":[true,null,-2,3.5,"x\u00e9"],"c":{"d":{}},"e":18446744073709551615}"#, "[]", "\"s\"", " 12 "]
        {
            let strict = parse_strict(text.as_bytes()).unwrap();
            assert_eq!(strict, serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
        for text in [r#"{"a":1,"a":2}"#, r#"{"x":[{"k":"1","k":"1"}]}"#] {
            let e = parse_strict(text.as_bytes()).unwrap_err();
            assert!(e.is_data() && e.to_string().contains("repeats a key"), "{text}: {e}");
        }
        for text in ["{\"a\":1} x", "1e999", "{", &"[".repeat(200)] {
            assert!(!parse_strict(text.as_bytes()).unwrap_err().is_data(), "{text}");
        }
    }
}
