//! The policy bundle loader on arbitrary text: no panic; a bundle it accepts validates.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = policies::bundle::load_texts([("fuzz.toml", s)]) {
        policies::bundle::validate("fuzz.toml", &policy).expect("a loaded bundle validates");
    }
});
