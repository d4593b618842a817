//! Every identifier parser on arbitrary text: no panic, and whatever parses prints back to a
//! form that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policies::ids::{Iban, Kbo, Niss, Plate, VCode, Vin};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = Niss::parse(s) {
        let mut b = [0u8; 11];
        assert_eq!(Niss::parse(n.digits(&mut b)).ok(), Some(n));
        assert_eq!(Niss::parse(&n.to_string()).ok(), Some(n));
    }
    if let Ok(k) = Kbo::parse(s) {
        let mut b = [0u8; 10];
        assert_eq!(Kbo::parse(k.digits(&mut b)).ok(), Some(k));
    }
    if let Ok(i) = Iban::parse(s) {
        assert_eq!(Iban::parse(&i.to_string()).ok(), Some(i));
    }
    if let Ok(p) = Plate::parse(s) {
        assert_eq!(Plate::parse(p.as_str()).ok(), Some(p));
    }
    if let Ok(v) = Vin::parse(s) {
        assert_eq!(Vin::parse(v.as_str()).ok(), Some(v));
    }
    if let Ok(v) = VCode::parse(s) {
        assert_eq!(VCode::parse(&v.to_string()).ok(), Some(v));
    }
});
