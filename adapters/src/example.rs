//! Valid example answers generated from a layout: what the generated sandbox of a registered
//! source answers during a convention's test phase, before the real source exists.
//!
//! JSON: a schema's own `examples` (first), `const`, `default` or `enum` win; otherwise a value
//! is built from the type (every property of an object, so every grantable field shows; one
//! element of an array, or `minItems`), with dates for `format: date` and strings matching a
//! `pattern`. XML: every element of the shape once (an element of a choice: the first), texts
//! from the simple type's enumeration, bounds or pattern. Data subjects get valid synthetic
//! national or enterprise numbers. The same layout always gives the same example.

use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{Map, Value};

use crate::layout::SubjectType;
use crate::synthetic::Rng;
use crate::xml::{Element, Kind, Node, SimpleBase, Text};

/// A string matching `pattern` (the `regex` crate's syntax): the first choice of every
/// alternative and class, each repetition its least count. `None` when the pattern does not
/// parse.
pub fn matching(pattern: &str) -> Option<String> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let mut out = String::new();
    walk(&hir, &mut out);
    Some(out)
}

fn walk(h: &Hir, out: &mut String) {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => out.push_str(&String::from_utf8_lossy(&l.0)),
        HirKind::Class(Class::Unicode(c)) => out.extend(c.ranges().first().map(|r| r.start())),
        HirKind::Class(Class::Bytes(c)) => out.extend(c.ranges().first().map(|r| char::from(r.start()))),
        HirKind::Repetition(r) => {
            for _ in 0..r.min {
                walk(&r.sub, out);
            }
        }
        HirKind::Capture(c) => walk(&c.sub, out),
        HirKind::Concat(v) => v.iter().for_each(|x| walk(x, out)),
        HirKind::Alternation(v) => v.iter().take(1).for_each(|x| walk(x, out)),
    }
}

/// An example of the JSON Schema `schema`.
pub fn json(schema: &Value) -> Value {
    json_at(schema, schema, 0)
}

fn json_at(root: &Value, s: &Value, depth: usize) -> Value {
    if depth > 32 {
        return Value::Null;
    }
    if let Some(t) =
        s.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')).and_then(|p| root.pointer(p))
    {
        return json_at(root, t, depth + 1);
    }
    if let Some(v) = s.get("examples").and_then(Value::as_array).and_then(|v| v.first()) {
        return v.clone();
    }
    for k in ["const", "default"] {
        if let Some(v) = s.get(k) {
            return v.clone();
        }
    }
    if let Some(v) = s.get("enum").and_then(Value::as_array).and_then(|v| v.first()) {
        return v.clone();
    }
    for k in ["oneOf", "anyOf"] {
        if let Some(b) = s.get(k).and_then(Value::as_array).and_then(|v| v.first()) {
            return json_at(root, b, depth + 1);
        }
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for b in all {
            if let Value::Object(m) = json_at(root, b, depth + 1) {
                merged.extend(m);
            }
        }
        return Value::Object(merged);
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(v)) => v.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null"),
        _ if s.get("properties").is_some() => "object",
        _ => "null",
    };
    match ty {
        "object" => {
            let mut m = Map::new();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, p) in props {
                    m.insert(k.clone(), json_at(root, p, depth + 1));
                }
            }
            Value::Object(m)
        }
        "array" => {
            let n = s.get("minItems").and_then(Value::as_u64).unwrap_or(1).max(1);
            let item = s.get("items").map_or(Value::Null, |i| json_at(root, i, depth + 1));
            Value::Array((0..n).map(|_| item.clone()).collect())
        }
        "string" => Value::String(string(s)),
        "integer" => Value::from(
            s.get("minimum")
                .and_then(Value::as_i64)
                .unwrap_or(1)
                .max(s.get("exclusiveMinimum").and_then(Value::as_i64).map_or(i64::MIN, |m| m + 1)),
        ),
        "number" => s.get("minimum").cloned().unwrap_or_else(|| Value::from(1.5)),
        "boolean" => Value::Bool(true),
        _ => Value::Null,
    }
}

fn string(s: &Value) -> String {
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(1).max(1) as usize;
    match s.get("format").and_then(Value::as_str) {
        Some("date") => return "2024-01-15".into(),
        Some("date-time") => return "2024-01-15T10:00:00Z".into(),
        _ => {}
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && let Some(m) = matching(p)
    {
        return m;
    }
    "x".repeat(min)
}

/// Puts valid synthetic identifiers at `segs` (`*`: every element of an array).
pub fn set_subjects(v: &mut Value, segs: &[&str], kind: SubjectType) {
    let mut rng = Rng::new(segs.len() as u64 + 7);
    set_at(v, segs, kind, &mut rng);
}

fn set_at(v: &mut Value, segs: &[&str], kind: SubjectType, rng: &mut Rng) {
    let Some((first, rest)) = segs.split_first() else {
        *v = Value::String(identifier(kind, rng));
        return;
    };
    match (v, *first) {
        (Value::Array(items), "*") => items.iter_mut().for_each(|i| set_at(i, rest, kind, rng)),
        (Value::Object(m), k) => {
            if let Some(x) = m.get_mut(k) {
                set_at(x, rest, kind, rng);
            }
        }
        _ => {}
    }
}

fn identifier(kind: SubjectType, rng: &mut Rng) -> String {
    match kind {
        SubjectType::Person => {
            let mut b = [0u8; 11];
            rng.niss().digits(&mut b).to_owned()
        }
        SubjectType::Organisation => {
            let mut b = [0u8; 10];
            rng.kbo().digits(&mut b).to_owned()
        }
    }
}

/// An example element of the shape `node` in namespace `ns`.
pub fn xml(node: &Node, ns: &str) -> Element {
    let mut rng = Rng::new(11);
    xml_at(node, ns, &mut rng)
}

fn xml_at(node: &Node, ns: &str, rng: &mut Rng) -> Element {
    let mut el = Element::new(ns, node.name);
    match node.kind {
        Kind::Text(t) => {
            el.text = match node.subject {
                Some(kind) => identifier(kind, rng),
                None => text(t),
            }
        }
        Kind::Seq(nodes) => {
            for n in nodes {
                for _ in 0..n.min.max(1) {
                    el.children.push(xml_at(n, ns, rng));
                }
            }
        }
        Kind::Choice(nodes) => el.children.extend(nodes.first().map(|n| xml_at(n, ns, rng))),
    }
    el
}

fn text(t: Text) -> String {
    match t {
        Text::Str { min, .. } => "x".repeat(min.max(1)),
        Text::Date => "2024-01-15".into(),
        Text::Enum(v) => v.first().copied().unwrap_or_default().to_owned(),
        Text::Id(..) => String::new(),
        Text::Simple(s) => {
            if let Some(v) = s.enumeration.as_ref().and_then(|v| v.first()) {
                return v.clone();
            }
            match s.base {
                SimpleBase::Date => return "2024-01-15".into(),
                SimpleBase::Integer => return s.min.unwrap_or_else(|| s.max.unwrap_or(1).min(1)).to_string(),
                SimpleBase::Decimal | SimpleBase::String => {}
            }
            if let Some(m) = s.patterns.last().and_then(|(_, re)| matching(re.as_str())) {
                return m;
            }
            if s.base == SimpleBase::Decimal {
                return "1.5".into();
            }
            "x".repeat(s.min_len.max(1))
        }
    }
}
