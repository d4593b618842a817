//! Deterministic synthetic identifiers for sandboxes and tests. The same seed always gives the
//! same population, so tests can name subjects the sandboxes know.

use policies::ids::{Iban, Kbo, Niss, Plate, Vin};

/// SplitMix64: small, fast, good enough to spread synthetic data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn niss(&mut self) -> Niss {
        loop {
            let year = self.range(1930, 2024) as u16;
            let month = self.range(1, 13) as u8;
            let day = self.range(1, 29) as u8;
            let serial = self.range(1, 999) as u16;
            if let Some(n) = Niss::from_parts(year, month, day, serial) {
                return n;
            }
        }
    }

    pub fn kbo(&mut self) -> Kbo {
        loop {
            // Enterprise numbers in use start with 0 (legacy) or 1 (recent), 8 digits before
            // the check digits.
            if let Some(k) = Kbo::from_first8(self.range(2_000_000, 19_999_999) as u32) {
                return k;
            }
        }
    }

    /// One of `v` (not empty).
    pub fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.range(0, v.len() as u64) as usize]
    }

    /// A plate of the 2010 format, `1-ABC-123`.
    pub fn plate(&mut self) -> Plate {
        loop {
            let mut s = String::with_capacity(9);
            s.push(if self.range(0, 2) == 0 { '1' } else { '2' });
            s.push('-');
            for _ in 0..3 {
                s.push(char::from(b'A' + self.range(0, 26) as u8));
            }
            s.push('-');
            s.push_str(&format!("{:03}", self.range(0, 1000)));
            if let Ok(p) = Plate::parse(&s) {
                return p;
            }
        }
    }

    /// A VIN of 17 characters of `[A-HJ-NPR-Z0-9]`, starting with a European maker code.
    pub fn vin(&mut self) -> Vin {
        const CHARS: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ0123456789";
        const WMI: &[&str] = &["WVW", "WBA", "VF1", "VF3", "ZFA", "YV1", "TMB", "WDD"];
        loop {
            let mut s = String::with_capacity(17);
            s.push_str(WMI[self.range(0, WMI.len() as u64) as usize]);
            while s.len() < 17 {
                s.push(char::from(CHARS[self.range(0, CHARS.len() as u64) as usize]));
            }
            if let Ok(v) = Vin::parse(&s) {
                return v;
            }
        }
    }

    pub fn iban(&mut self) -> Iban {
        loop {
            if let Some(i) = Iban::from_account_first10(self.range(1_000_000_000, 9_999_999_999)) {
                return i;
            }
        }
    }
}

/// The persons a sandbox knows: `n` distinct national numbers from `seed`.
pub fn people(seed: u64, n: usize) -> Vec<Niss> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::with_capacity(n);
    while out.len() < n {
        let p = rng.niss();
        if seen.insert(p) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populations_are_deterministic_and_valid() {
        let a = people(7, 500);
        assert_eq!(a, people(7, 500));
        for p in &a {
            assert_eq!(Niss::parse(&p.to_string()), Ok(*p));
        }
        let mut r = Rng::new(1);
        for _ in 0..500 {
            let k = r.kbo();
            assert_eq!(Kbo::parse(&k.to_string()), Ok(k));
            let i = r.iban();
            assert_eq!(Iban::parse(&i.to_string()), Ok(i));
        }
    }
}
