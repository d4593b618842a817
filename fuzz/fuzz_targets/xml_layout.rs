//! SOAP services' layout check on arbitrary bodies, as request and as answer, for every SOAP
//! service of the catalogue; what passes is minimised and written back, and must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for svc in adapters::catalogue() {
        let Some(soap) = svc.soap else { continue };
        let _ = soap.check_request(data);
        if let Ok(payload) = soap.check_response(data) {
            let kept = adapters::xml::minimise(payload, &soap.response, &|f: &str| f.len() % 2 == 0);
            if let Some(el) = kept {
                let doc = adapters::xml::envelope(&el);
                adapters::xml::open_envelope(doc.as_bytes(), adapters::xml::LIMITS).expect("our own output parses");
            }
        }
    }
});
