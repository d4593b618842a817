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
dpo_advice = "DPO-1"

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

#[test]
fn a_protocol_needs_the_dpo_advice_and_a_general_protocol_all_13_elements() {
    let e = errors(&PROTOCOL.replace("dpo_advice = \"DPO-1\"\n", ""));
    assert_eq!(
        e,
        [
            "broken.toml: instruments[0] \"P/1\".dpo_advice: a protocol carries the advice of the data protection officer"
        ]
    );
    // A general protocol: the same 13 elements and the advice, which a draft may still lack
    // but nothing in force may.
    let general = "[[instruments]]\nreference = \"G/1\"\nkind = \"general\"\ntitle = \"t\"\nauthority = \"VTC\"\nnumber = \"1\"\ndate = 2020-01-01\neligible = [\"company\"]\nstatus = \"test\"\n  [instruments.protocol]\n  controllers = \"x\"\n  purposes = \"x\"\n";
    let e = errors(general);
    assert_eq!(e.len(), 12, "11 elements and the advice: {e:?}");
    assert!(e.iter().any(|m| m.ends_with("protocol lacks element (13) specific_measures")), "{e:?}");
    let draft = errors(&general.replace("status = \"test\"", "status = \"draft\""));
    assert_eq!(draft.len(), 11, "a draft awaits its advice: {draft:?}");
}

#[test]
fn chains_of_instruments_are_checked() {
    let d = |r: &str, extra: &str| {
        format!(
            "[[instruments]]\nreference = \"{r}\"\nkind = \"deliberation\"\ntitle = \"t\"\nauthority = \"CSI\"\nnumber = \"1\"\ndate = 2020-01-01\nstatus = \"active\"\n{extra}"
        )
    };
    let e = errors(&format!("{}{}", d("A", "parent = \"B\"\n"), d("B", "parent = \"A\"\n")));
    assert!(e.iter().any(|m| m.contains("\"A\".parent: the chain of parents loops")), "{e:?}");
    let e = errors(&format!("{}{}", d("A", ""), d("B", "replaces = [\"A\"]\n")));
    assert_eq!(e, ["broken.toml: instruments[1] \"B\".replaces[0]: 'A' is not a protocol"]);
    let e = errors(&format!("{PROTOCOL}{}", d("B", "replaces = [\"P/1\"]\n")));
    assert_eq!(e, Vec::<String>::new());
}

#[test]
fn nothing_goes_beyond_a_statutory_ceiling() {
    let base = BASE.replace(
        "owner = \"0872000108\"\n",
        "owner = \"0872000108\"\n  [sources.ceiling]\n  basis = \"Decree art. 5/4\"\n  recipients = [\"flemish-instance\"]\n  consent = true\n  purposes = [\"PAY\"]\n  fields = [\"a\"]\n",
    );
    let statutory = "[[instruments]]\nreference = \"S/1\"\nkind = \"statutory\"\ntitle = \"t\"\nlaw = \"l\"\narticle = \"1\"\nstatus = \"active\"\n  [[instruments.grants]]\n  id = \"g\"\n  recipient = { org = \"0765432146\" }\n  service = \"src.svc\"\n  purposes = [\"MARKETING\"]\n  fields = [\"a\", \"b\"]\n";
    let text = format!("{base}\n{statutory}");
    let e: Vec<String> = match load_texts([("broken.toml", text.as_str())]) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    };
    let ceiling = "exceeds the statutory ceiling of source 'src' (Decree art. 5/4)";
    assert_eq!(
        e,
        [
            format!(
                "broken.toml: instruments[0] \"S/1\".grants[0].recipient: {ceiling}: a company may not receive; recipients are limited to flemish-instance"
            ),
            format!(
                "broken.toml: instruments[0] \"S/1\".grants[0].purposes: {ceiling}: purpose 'MARKETING' is not allowed; purposes are limited to PAY"
            ),
            format!("broken.toml: instruments[0] \"S/1\".grants[0].fields: {ceiling}: field 'b' may not leave"),
            format!(
                "broken.toml: instruments[0] \"S/1\".grants[0].consent: {ceiling}: every access needs the data subject's consent"
            ),
        ]
    );
}
