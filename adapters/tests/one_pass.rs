//! The one-pass check and minimisation of JSON answers (`adapters::stream`) against the tree
//! path it stands in for (read, check with jsonschema, minimise, write): wherever the pass
//! answers, the bytes and subjects are the tree path's, and the answer is one the tree path
//! accepts. It must answer for the sources' ordinary answers, or the data plane gains nothing.
#![allow(clippy::unwrap_used)]

use adapters::layout::{self, Layout, SubjectType};
use adapters::synthetic::Rng;
use serde_json::{Value, json};

type Out = (Vec<u8>, Vec<(SubjectType, String)>);

/// The tree path, as the gateway takes it for an answer the pass leaves.
fn tree(l: &Layout, body: &[u8], granted: &dyn Fn(&str) -> bool) -> Option<Out> {
    let doc = layout::parse_answer(body).ok()?;
    l.check(&doc).ok()?;
    let reduced = l.minimise(doc, granted);
    let subjects = l.subjects(&reduced);
    Some((layout::write_answer(&reduced, body.len()), subjects))
}

/// Grant sets to try for a layout: none, all, each field alone, and some mixes.
fn grants(def: &layout::LayoutDef, rng: &mut Rng) -> Vec<Vec<&'static str>> {
    let fields: Vec<&'static str> = def.fields.iter().map(|(f, _)| *f).collect();
    let mut out = vec![vec![], fields.clone()];
    out.extend(fields.iter().map(|f| vec![*f]));
    for _ in 0..4 {
        out.push(fields.iter().copied().filter(|_| rng.range(0, 2) == 0).collect());
    }
    out
}

/// Compares the two paths on `body`; returns whether the pass answered.
fn same(name: &str, l: &Layout, body: &[u8], granted: &[&str]) -> bool {
    let g = |f: &str| granted.contains(&f);
    let fast = l.one_pass(body, g);
    let slow = tree(l, body, &g);
    if let Some(fast) = &fast {
        let text = String::from_utf8_lossy(body);
        assert!(slow.is_some(), "{name}: the pass accepted what the tree path refuses: {text}");
        assert_eq!(Some(fast), slow.as_ref(), "{name} {granted:?}: {text}");
    }
    fast.is_some()
}

fn json_layouts() -> Vec<(&'static str, layout::LayoutDef, Layout)> {
    adapters::catalogue()
        .into_iter()
        .filter_map(|svc| svc.layout.map(|def| (svc.id, def, Layout::new(def).unwrap())))
        .collect()
}

#[test]
fn the_association_registers_answers_take_the_one_pass_and_leave_as_the_tree_path_writes_them() {
    let layouts = json_layouts();
    let (name, def, l) = layouts.iter().find(|(id, _, _)| id.contains("association")).unwrap();
    assert!(l.has_one_pass(), "{name}");
    let register = adapters::associations::sandbox::Register::generate();
    let mut rng = Rng::new(7);
    let sets = grants(def, &mut rng);
    for vcode in adapters::associations::sandbox::Register::vcodes(300) {
        let doc = &register.get(vcode).unwrap().doc;
        for text in [serde_json::to_vec(doc).unwrap(), serde_json::to_vec_pretty(doc).unwrap()] {
            for g in &sets {
                assert!(same(name, l, &text, g), "{name} {g:?}: the pass left an ordinary answer");
            }
        }
    }
}

#[test]
fn every_json_layouts_examples_agree_and_the_plain_ones_take_the_one_pass() {
    let mut rng = Rng::new(11);
    let mut taken = 0;
    for (name, def, l) in json_layouts() {
        let schema: Value = serde_json::from_str(def.response_schema).unwrap();
        let mut example = adapters::example::json(&schema);
        for (path, kind) in def.subjects {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            adapters::example::set_subjects(&mut example, &segs, *kind);
        }
        let text = serde_json::to_vec(&example).unwrap();
        for g in grants(&def, &mut rng) {
            if same(name, &l, &text, &g) {
                taken += 1;
            }
        }
        // Every catalogue layout is within the pass's subset of JSON Schema; one with a
        // default/per-service rule is always read as a tree.
        assert_eq!(l.has_one_pass(), def.fallback.is_none(), "{name}");
    }
    assert!(taken > 0);
}

#[test]
fn what_the_pass_does_not_handle_or_the_layout_refuses_goes_to_the_tree_path() {
    let layouts = json_layouts();
    let (name, _, l) = layouts.iter().find(|(id, _, _)| id.contains("association")).unwrap();
    let v = adapters::associations::sandbox::Register::vcodes(1)[0].to_string();
    let base = json!({"vCode": v, "name": "Club", "status": "active",
        "representatives": [{"niss": "85073003328", "name": "An Maes", "role": "chair"}],
        "structure": {"umbrella": null, "sections": []}, "recognition": null, "enterpriseNumber": null});
    let ok = serde_json::to_string(&base).unwrap();
    assert!(same(name, l, ok.as_bytes(), &["representatives", "name"]));
    // Members in another order than the schema's, and a key that is a property's name and more.
    let reordered =
        r#"{"status":"active","structure":{"sections":[],"umbrella":null},"name":"Club","vCode":"V0000001"}"#;
    assert!(same(name, l, reordered.replace("V0000001", &v).as_bytes(), &["name", "status"]));
    let left: Vec<String> = [
        r#"{"vCode":"V0000001","nameX":"Club","status":"active"}"#,
        r#"{"vCode":"V0000001","nam":"Club","status":"active"}"#,
        // A repeated key: the tree path refuses it.
        r#"{"vCode":"V0000001","name":"Club","status":"active","name":"Other"}"#,
        // A key the layout does not name, a missing required one.
        r#"{"vCode":"V0000001","name":"Club","status":"active","extra":1}"#,
        r#"{"vCode":"V0000001","name":"Club"}"#,
        // An identifier whose check digits are wrong, a pattern broken, an enum value not listed.
        r#"{"vCode":"V0000001","name":"Club","status":"active","representatives":[{"niss":"85073003329","name":"A","role":"r"}]}"#,
        r#"{"vCode":"V0000001","name":"Club","status":"active","structure":{"sections":["V123"]}}"#,
        r#"{"vCode":"V0000001","name":"Club","status":"dormant"}"#,
        // Escapes, in a value and in a key: decided by the tree path.
        r#"{"vCode":"V0000001","name":"Cl\u00fcb","status":"active"}"#,
        r#"{"vCode":"V0000001","n\u0061me":"Club","status":"active"}"#,
        // A number where a string belongs, the wrong branch of a oneOf, a broken text.
        r#"{"vCode":"V0000001","name":5,"status":"active"}"#,
        r#"{"vCode":"V0000001","name":"Club","status":"active","recognition":"yes"}"#,
        r#"{"vCode":"V0000001","name":"Club","status":"active"} x"#,
        r#"{"vCode":"V0000001","name":"Club","status":"active""#,
    ]
    .iter()
    .map(|t| t.replace("V0000001", &v))
    .collect();
    for text in &left {
        let all = |_: &str| true;
        assert!(l.one_pass(text.as_bytes(), all).is_none(), "{text}");
        // Still the same answer either way where the tree path takes it.
        same(name, l, text.as_bytes(), &["name"]);
    }
}

#[test]
fn mangled_answers_never_part_the_two_paths() {
    let layouts = json_layouts();
    let register = adapters::associations::sandbox::Register::generate();
    let mut rng = Rng::new(3);
    let pieces: &[&[u8]] =
        &[b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b" ", b"null", b"1", b"-0", b"1.5e3", b"\"x\"", b"\x01"];
    let mut taken = 0;
    for vcode in adapters::associations::sandbox::Register::vcodes(200) {
        let text = serde_json::to_vec(&register.get(vcode).unwrap().doc).unwrap();
        for _ in 0..20 {
            let mut m = text.clone();
            for _ in 0..rng.range(1, 4) {
                let at = rng.range(0, m.len() as u64) as usize;
                match rng.range(0, 3) {
                    0 => {
                        m.remove(at);
                    }
                    1 => {
                        let p = pieces[rng.range(0, pieces.len() as u64) as usize];
                        m.splice(at..at, p.iter().copied());
                    }
                    _ => {
                        let b = m[at];
                        m[at] = if b.is_ascii_digit() { b'0' + (b - b'0' + 1) % 10 } else { b.to_ascii_uppercase() };
                    }
                }
            }
            for (name, def, l) in &layouts {
                let fields: Vec<&str> = def.fields.iter().map(|(f, _)| *f).collect();
                for g in [&fields[..], &fields[..fields.len() / 2], &[]] {
                    taken += usize::from(same(name, l, &m, g));
                }
            }
        }
    }
    // Some mangled answers are still valid (a digit of a name changed, a space added).
    assert!(taken > 0);
}
