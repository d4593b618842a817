//! JSON services' layout check on arbitrary bodies, as request and as answer, for every JSON
//! service of the catalogue; what passes is minimised, and the minimised answer holds no
//! field the grant lacks (it is checked again with nothing granted).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for svc in adapters::catalogue() {
        let Some(def) = svc.layout else { continue };
        let Ok(layout) = adapters::layout::Layout::new(def) else { return };
        let _ = layout.check_request(data);
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(data) else { continue };
        if layout.check(&answer).is_ok() {
            let _ = layout.subjects(&answer);
            let none = layout.minimise(answer.clone(), |_| false);
            let again = layout.minimise(none.clone(), |_| true);
            assert_eq!(none, again, "minimising keeps nothing the first pass dropped");
            let _ = layout.minimise(answer, |_| true);
        }
    }
});
