//! A broken bundle fails with a message naming the file and the key.

#![allow(clippy::unwrap_used)]

use policies::bundle::load_texts;

const BASE: &str = r#"
[[organisations]]
kbo = "0872000108"
name = "Owner"
kind = "data-owner"

[[organisations]]
kbo = "0765432146"
name = "Company"
kind = "company"

[[sources]]
id = "src"
name = "Source"
owner = "0872000108"

[[services]]
id = "src.svc"
source = "src"
fields = ["a", "b"]
"#;

fn errors(extra: &str) -> Vec<String> {
    let text = format!("{BASE}\n{extra}");
    match load_texts([("broken.toml", text.as_str())]) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const PROTOCOL: &str = r#"
[[instruments]]
reference = "P/1"
kind = "protocol"
title = "A protocol"
status = "active"

  [instruments.protocol]
  controllers = "x"
  purposes = "x"
  data = "x"
  recipients = "x"
  legal_basis = "x"
  security = "x"
  periodicity = "x"
  duration = "x"
  sanctions = "x"
  original_purposes = "x"
  compatibility = "x"
  data_quality = "x"
  specific_measures = "x"
"#;

#[test]
fn a_complete_protocol_loads() {
    assert_eq!(errors(PROTOCOL), Vec::<String>::new());
}

#[test]
fn each_missing_protocol_element_is_named() {
    let names = [
        "controllers",
        "purposes",
        "data",
        "recipients",
        "legal_basis",
        "security",
        "periodicity",
        "duration",
        "sanctions",
        "original_purposes",
        "compatibility",
        "data_quality",
        "specific_measures",
    ];
    let mut seen = std::collections::HashSet::new();
    for (n, name) in names.iter().enumerate() {
        let text = PROTOCOL.replace(&format!("  {name} = \"x\"\n"), "");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        let expected =
            format!("broken.toml: instruments[0] \"P/1\".protocol.{name}: protocol lacks element ({}) {name}", n + 1);
        assert_eq!(e[0], expected);
        assert!(seen.insert(e[0].clone()));
    }
    assert_eq!(seen.len(), 13);
}

#[test]
fn semantic_errors_name_file_and_key() {
    let cases = [
        (
            "[[instruments]]\nreference = \"D/1\"\nkind = \"deliberation\"\ntitle = \"t\"\nauthority = \"CSI\"\nnumber = \"1\"\ndate = 2020-01-01\nstatus = \"active\"\n  [[instruments.grants]]\n  id = \"g\"\n  recipient = { org = \"0765432146\" }\n  service = \"src.nope\"\n  purposes = [\"P\"]\n  fields = [\"a\"]\n",
            "broken.toml: instruments[0] \"D/1\".grants[0].service: unknown service 'src.nope'",
        ),
        (
            "[[instruments]]\nreference = \"D/1\"\nkind = \"deliberation\"\ntitle = \"t\"\nauthority = \"CSI\"\nnumber = \"1\"\ndate = 2020-01-01\nstatus = \"active\"\n  [[instruments.grants]]\n  id = \"g\"\n  recipient = { org = \"0765432146\" }\n  service = \"src.svc\"\n  purposes = [\"P\"]\n  fields = [\"a\", \"zzz\"]\n",
            "broken.toml: instruments[0] \"D/1\".grants[0].fields: service 'src.svc' has no field 'zzz'",
        ),
        (
            "[[instruments]]\nreference = \"G/1\"\nkind = \"general\"\ntitle = \"t\"\nauthority = \"CSI\"\nnumber = \"1\"\ndate = 2020-01-01\neligible = [\"financial-institution\"]\nstatus = \"active\"\n  [[instruments.adhesions]]\n  org = \"0765432146\"\n  requested_by = \"x\"\n  date = 2020-01-01\n  dpo_advice = \"x\"\n  modalities_confirmed = true\n",
            "broken.toml: instruments[0] \"G/1\".adhesions[0].org: a company cannot adhere: the instrument is open to financial-institution",
        ),
        (
            "[[instruments]]\nreference = \"S/1\"\nkind = \"statutory\"\ntitle = \"t\"\nlaw = \"decree\"\nstatus = \"suspended\"\n",
            "broken.toml: instruments[0] \"S/1\".article: is required for a statutory basis",
        ),
    ];
    for (extra, expected) in cases {
        let e = errors(extra);
        assert!(e.iter().any(|m| m == expected), "expected {expected:?} in {e:#?}");
    }
    // A suspended instrument must say why.
    let e = errors(cases[3].0);
    assert!(e.iter().any(|m| m.ends_with("suspended_reason: a suspended instrument must say why")), "{e:?}");
}

#[test]
fn syntax_and_identifier_errors_name_file_and_line() {
    let e = load_texts([("bad.toml", "[[organisations]]\nkbo = \"0431150351\"\nname = \"x\"\nkind = \"company\"\n")])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("bad.toml: "), "{e}");
    assert!(e.contains("line 2") && e.contains("check digits"), "{e}");
    let e =
        load_texts([("bad.toml", "[[organisations]]\nkbo = \"0765432146\"\nnmae = \"x\"\n")]).unwrap_err().to_string();
    assert!(e.contains("nmae"), "{e}");
}

#[test]
fn a_date_with_a_time_is_refused_and_a_string_date_is_read() {
    let instrument = |valid_from: &str| {
        format!(
            "[[instruments]]\nreference = \"D/1\"\nkind = \"deliberation\"\ntitle = \"t\"\nauthority = \"A\"\nnumber = \"1\"\ndate = 2024-01-31\nstatus = \"active\"\nvalid_from = {valid_from}\n"
        )
    };
    let e = errors(&instrument("2024-01-31T10:00:00"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("broken.toml: ") && e[0].contains("not a plain date"), "{e:?}");
    // Exported bundles write dates as strings; they read back the same.
    assert_eq!(errors(&instrument("\"2024-02-01\"")), Vec::<String>::new());
    assert_eq!(errors(&instrument("2024-02-01")), Vec::<String>::new());
}
