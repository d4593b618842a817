//! A data owner's XSD, as `POST /services` hands it to the subset compiler: arbitrary text
//! either compiles or is refused with a message, never a panic or a hang. (Freezing a compiled
//! schema into `'static` nodes is left out: it keeps what it builds for the process's life,
//! which a registration does once and a fuzzer would do a million times.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match adapters::xsd::compile(text) {
        Ok(schema) => {
            for (name, decl) in &schema.elements {
                assert_eq!(&decl.name, name);
                assert!(decl.find(&[]).is_some());
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
