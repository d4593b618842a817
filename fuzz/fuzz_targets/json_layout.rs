//! JSON services' layout check on arbitrary bodies, as request and as answer, for every JSON
//! service of the catalogue; what passes is minimised, and the minimised answer holds no
//! field the grant lacks (it is checked again with nothing granted). The strict parser of
//! request bodies, and the in-place reading of answers (a reader of the gateway's own), agree
//! with serde_json on everything but repeated keys, both ways. The one-pass check and
//! minimisation agrees with the tree path wherever it answers.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The catalogue's JSON layouts, compiled once (as the gateway does at start).
static LAYOUTS: std::sync::LazyLock<Vec<adapters::layout::Layout>> = std::sync::LazyLock::new(|| {
    adapters::catalogue()
        .into_iter()
        .filter_map(|svc| svc.layout)
        .map(|def| adapters::layout::Layout::new(def).expect("the catalogue's layouts compile"))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let plain = serde_json::from_slice::<serde_json::Value>(data);
    match adapters::layout::parse_strict(data) {
        Ok(strict) => assert_eq!(plain.as_ref().ok(), Some(&strict), "strict and plain parsing disagree"),
        Err(e) => {
            assert!(plain.is_err() || e.is_data(), "strict refused what serde_json took, not for a repeated key: {e}")
        }
    }
    // Answers are read in place, by the gateway's own reader: it agrees with serde_json, both
    // ways, but refuses repeated keys.
    let answer = match std::str::from_utf8(data) {
        Ok(text) => match adapters::doc::parse(text) {
            Ok(doc) => Some(doc),
            Err(e) => {
                assert!(plain.is_err() || e.is_data(), "the in-place reading refused what serde_json took: {e}");
                None
            }
        },
        Err(_) => None,
    };
    if let Some(doc) = &answer {
        assert_eq!(plain.as_ref().ok(), Some(&doc.to_value()), "the in-place reading and serde_json disagree");
    }
    for layout in LAYOUTS.iter() {
        let _ = layout.check_request(data);
        // The one-pass check answers only for an answer the tree path accepts, with its bytes
        // and subjects.
        let grants: [fn(&str) -> bool; 3] = [|_| true, |_| false, |f| f.len() % 2 == 0];
        for granted in grants {
            if let Some(fast) = layout.one_pass(data, granted) {
                let doc = answer.clone().expect("the one pass took an answer the reader refuses");
                assert!(layout.check(&doc).is_ok(), "the one pass took an answer the layout refuses");
                let reduced = layout.minimise(doc, granted);
                let slow = (adapters::layout::write_answer(&reduced, data.len()), layout.subjects(&reduced));
                assert_eq!(fast, slow, "the one pass and the tree path disagree");
            }
        }
        let Some(answer) = answer.clone() else { continue };
        if layout.check(&answer).is_ok() {
            let _ = layout.subjects(&answer);
            let none = layout.minimise(answer.clone(), |_| false);
            let again = layout.minimise(none.clone(), |_| true);
            assert_eq!(none, again, "minimising keeps nothing the first pass dropped");
            let all = layout.minimise(answer, |_| true);
            let written = adapters::layout::write_answer(&all, data.len());
            assert_eq!(adapters::layout::parse_answer(&written), Ok(all), "what is written reads back the same");
        }
    }
});
