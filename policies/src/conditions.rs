//! The access matrix's "where" and "when" (seed 004: "qui-où-quand-en quelle qualité"): the
//! conditions a grant may put on where a call comes from (the calling application's
//! certificate, a network zone the integrator names) and when it is made (weekly windows in
//! Belgian local time). Parsed once when the snapshot is compiled; checked by `decide()` with
//! integer arithmetic only.

use std::net::IpAddr;

use crate::model::{Origin, Window, Zone};

/// A network block: an address (IPv4 as IPv4-mapped IPv6) and its mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Net {
    addr: u128,
    mask: u128,
}

impl Net {
    /// `10.12.0.0/16`, `2001:db8::/32`; the bare address is a /32 or /128.
    pub fn parse(s: &str) -> Result<Net, String> {
        let bad = || format!("'{s}' is not a network like 10.12.0.0/16 or 2001:db8::/32");
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let (bits, max) = match ip {
            IpAddr::V4(_) => (len.unwrap_or(32), 32),
            IpAddr::V6(_) => (len.unwrap_or(128), 128),
        };
        if bits > max {
            return Err(bad());
        }
        // An IPv4 prefix counts from bit 96 of the mapped address.
        let bits = u32::from(bits) + if max == 32 { 96 } else { 0 };
        let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
        let addr = to_u128(ip);
        if addr & !mask != 0 {
            return Err(format!("'{s}' has host bits set; write the network's first address"));
        }
        Ok(Net { addr, mask })
    }

    fn contains(&self, ip: u128) -> bool {
        ip & self.mask == self.addr
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A weekly window: a set of days (bit 0 Monday) and minutes of the local day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    days: u8,
    from: u16,
    until: u16,
}

fn minutes(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl Span {
    pub fn parse(w: &Window) -> Result<Span, String> {
        let mut days = 0u8;
        for d in &w.days {
            let i =
                DAYS.iter().position(|x| x == d).ok_or_else(|| format!("'{d}' is not one of {}", DAYS.join(", ")))?;
            days |= 1 << i;
        }
        if days == 0 {
            return Err("a window names at least one day".to_owned());
        }
        let from = minutes(&w.from).ok_or_else(|| format!("from '{}' is not a time like 08:00", w.from))?;
        let until =
            minutes(&w.until).ok_or_else(|| format!("until '{}' is not a time like 18:00 (or 24:00)", w.until))?;
        if from >= until {
            return Err(format!("the window ends ({}) before it starts ({})", w.until, w.from));
        }
        Ok(Span { days, from, until })
    }

    fn contains(&self, weekday: u8, minute: u16) -> bool {
        self.days & (1 << weekday) != 0 && minute >= self.from && minute < self.until
    }
}

/// The most windows a grant may hold (validation refuses more): they are kept inline, so a
/// check reads no memory beyond the conditions themselves.
pub const MAX_WINDOWS: usize = 8;

/// A grant's conditions, compiled into one allocation the grant points to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conditions {
    /// The weekly windows, the first `n_windows` of them; none: any time.
    windows: [Span; MAX_WINDOWS],
    n_windows: u8,
    /// Whether the grant names zones: then the peer must be in one of `networks` (none when
    /// the zones hold no network: nothing matches).
    zoned: bool,
    networks: Box<[Net]>,
    /// Empty: any certificate.
    certificates: Box<[[u8; 32]]>,
}

/// Why a condition refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmet {
    Origin,
    Time,
}

impl Conditions {
    /// Compiles a grant's conditions against the integrator's `zones`; `None` when it has
    /// none. Unknown zones and malformed values are left out (validation reports them); a
    /// zone list that names nothing known matches no address.
    pub fn compile(origin: Option<&Origin>, when: &[Window], zones: &[Zone]) -> Option<Box<Conditions>> {
        if origin.is_none() && when.is_empty() {
            return None;
        }
        let mut c = Conditions::default();
        for span in when.iter().filter_map(|w| Span::parse(w).ok()).take(MAX_WINDOWS) {
            c.windows[usize::from(c.n_windows)] = span;
            c.n_windows += 1;
        }
        if let Some(o) = origin {
            c.certificates = o.certificates.iter().filter_map(|x| fingerprint(x)).collect();
            c.zoned = !o.zones.is_empty();
            c.networks = zones
                .iter()
                .filter(|z| o.zones.contains(&z.name))
                .flat_map(|z| z.networks.iter().filter_map(|n| Net::parse(n).ok()))
                .collect();
        }
        Some(Box::new(c))
    }

    /// Checks a call from `certificate` at `peer`, at `now` (Unix seconds): the time first
    /// (inline), then the address, then the certificate.
    pub fn check(&self, certificate: Option<&[u8; 32]>, peer: Option<IpAddr>, now: i64) -> Result<(), Unmet> {
        if self.n_windows > 0 {
            let (weekday, minute) = brussels(now);
            let windows = &self.windows[..usize::from(self.n_windows)];
            if !windows.iter().any(|w| w.contains(weekday, minute)) {
                return Err(Unmet::Time);
            }
        }
        if self.zoned {
            let Some(ip) = peer.map(to_u128) else { return Err(Unmet::Origin) };
            if !self.networks.iter().any(|n| n.contains(ip)) {
                return Err(Unmet::Origin);
            }
        }
        if !self.certificates.is_empty() && !certificate.is_some_and(|c| self.certificates.contains(c)) {
            return Err(Unmet::Origin);
        }
        Ok(())
    }
}

/// A certificate fingerprint written as 64 hex digits (colons allowed).
pub fn fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of a day since 1970-01-01.
#[cfg(test)]
const fn year_of(days: i64) -> i64 {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + if m <= 2 { 1 } else { 0 }
}

/// The last Sunday of a month that has 31 days, at 01:00 UTC, in Unix seconds.
const fn last_sunday_1am(y: i64, m: i64) -> i64 {
    let d = days_from_civil(y, m, 31);
    // 1970-01-01 was a Thursday: (d + 4) mod 7 is 0 on a Sunday.
    let sunday = d - (d + 4).rem_euclid(7);
    sunday * 86_400 + 3_600
}

/// The first year of [`SUMMER`].
const FIRST_YEAR: i64 = 1970;
/// How many years [`SUMMER`] holds (1970–2299).
const YEARS: usize = 330;

/// Summer time in Belgium, per year: from the last Sunday of March to the last Sunday of
/// October, at 01:00 UTC (the EU rule), in Unix seconds; computed when the crate is compiled.
static SUMMER: [(i64, i64); YEARS] = {
    let mut t = [(0, 0); YEARS];
    let mut i = 0;
    while i < YEARS {
        let y = FIRST_YEAR + i as i64;
        t[i] = (last_sunday_1am(y, 3), last_sunday_1am(y, 10));
        i += 1;
    }
    t
};

/// Seconds in an average Gregorian year.
const YEAR_SECS: i64 = 31_556_952;

/// The weekday (0 Monday … 6 Sunday) and minute of the day in Belgium at `now` (Unix
/// seconds): CET, and CEST from the last Sunday of March to the last Sunday of October at
/// 01:00 UTC (the EU rule). The year is estimated by dividing by the average year's length,
/// which is wrong by at most a day around the 1st of January — when it is winter whichever
/// year is picked, so the answer is exact.
pub fn brussels(now: i64) -> (u8, u16) {
    // Before 1970 the answer is that of 1970's rule; times are unsigned from here on, which
    // lets the divisions by constants compile to multiplications.
    let now = now.max(0) as u64;
    let i = ((now / YEAR_SECS as u64) as usize).min(YEARS - 1);
    let (start, end) = SUMMER[i];
    let summer = now as i64 >= start && (now as i64) < end;
    let local = now + if summer { 7_200 } else { 3_600 };
    // Monday is 0: 1970-01-01, a Thursday, is 3.
    let weekday = ((local / 86_400 + 3) % 7) as u8;
    let minute = ((local % 86_400) / 60) as u16;
    (weekday, minute)
}

/// The same, computed from the calendar (the reference [`brussels`] is tested against).
#[cfg(test)]
fn brussels_by_calendar(now: i64) -> (u8, u16) {
    let year = year_of(now.div_euclid(86_400));
    let summer = now >= last_sunday_1am(year, 3) && now < last_sunday_1am(year, 10);
    let local = now + if summer { 7_200 } else { 3_600 };
    ((local.div_euclid(86_400) + 3).rem_euclid(7) as u8, (local.rem_euclid(86_400) / 60) as u16)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: &str) -> i64 {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp()
    }

    #[test]
    fn belgian_local_time_follows_summer_time() {
        // Thursday 1 January 1970, 00:00 UTC is 01:00 in Brussels.
        assert_eq!(brussels(0), (3, 60));
        assert_eq!(brussels(-5), (3, 60), "before 1970: 1970's");
        // 2026: summer time from Sunday 29 March 01:00 UTC to Sunday 25 October 01:00 UTC.
        assert_eq!(brussels(at("2026-03-29T00:59:00Z")), (6, 119));
        assert_eq!(brussels(at("2026-03-29T01:00:00Z")), (6, 180));
        assert_eq!(brussels(at("2026-10-25T00:59:00Z")), (6, 179));
        assert_eq!(brussels(at("2026-10-25T01:00:00Z")), (6, 120));
        // A winter Monday evening, UTC 23:30 is Tuesday 00:30 in Brussels.
        assert_eq!(brussels(at("2026-12-07T23:30:00Z")), (1, 30));
        // A summer Friday, 16:00 UTC is 18:00.
        assert_eq!(brussels(at("2026-07-03T16:00:00Z")), (4, 18 * 60));
        // Leap years and the year boundary.
        assert_eq!(brussels(at("2024-02-29T12:00:00Z")), (3, 13 * 60));
        assert_eq!(brussels(at("2026-12-31T23:00:00Z")), (4, 0));
        // The table agrees with the calendar every hour around each year's ends and
        // summer-time changes, 1970–2299.
        for y in 1970..2300 {
            for (m, d) in [(1, 1), (3, 25), (10, 25), (12, 31)] {
                let base = days_from_civil(y, m, d) * 86_400;
                for h in -48..(9 * 24) {
                    let t = base + h * 3_600;
                    if t < 0 {
                        continue;
                    }
                    assert_eq!(brussels(t), brussels_by_calendar(t), "{y}-{m}-{d} {h}h");
                }
            }
        }
    }

    #[test]
    fn windows_networks_and_certificates() {
        let w = |days: &[&str], from: &str, until: &str| Window {
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            from: from.to_owned(),
            until: until.to_owned(),
        };
        assert!(Span::parse(&w(&["mon"], "18:00", "08:00")).is_err());
        assert!(Span::parse(&w(&["monday"], "08:00", "18:00")).is_err());
        assert!(Span::parse(&w(&[], "08:00", "18:00")).is_err());
        assert!(Span::parse(&w(&["sun"], "00:00", "24:00")).is_ok());
        assert!(Span::parse(&w(&["sun"], "00:00", "24:01")).is_err());
        assert!(Net::parse("10.12.0.0/16").is_ok());
        assert!(Net::parse("10.12.0.1/16").is_err());
        assert!(Net::parse("10.12.0.0/33").is_err());
        assert!(Net::parse("2001:db8::/32").is_ok());

        let zones = vec![Zone { name: "fin-internal".into(), networks: vec!["10.12.0.0/16".into()] }];
        let cert = [7u8; 32];
        let hex: String = cert.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(fingerprint(&hex), Some(cert));
        let origin = Origin { certificates: vec![hex], zones: vec!["fin-internal".into()] };
        let office_hours = [w(&["mon", "tue", "wed", "thu", "fri"], "08:00", "18:00")];
        let c = Conditions::compile(Some(&origin), &office_hours, &zones).unwrap();
        let inside: IpAddr = "10.12.3.4".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.12.3.4".parse().unwrap();
        let outside: IpAddr = "10.13.0.1".parse().unwrap();
        let monday_ten = at("2026-12-07T09:00:00Z");
        let saturday = at("2026-12-05T09:00:00Z");
        let monday_seven = at("2026-12-07T06:30:00Z");
        assert_eq!(c.check(Some(&cert), Some(inside), monday_ten), Ok(()));
        assert_eq!(c.check(Some(&cert), Some(mapped), monday_ten), Ok(()));
        assert_eq!(c.check(Some(&[8u8; 32]), Some(inside), monday_ten), Err(Unmet::Origin));
        assert_eq!(c.check(None, Some(inside), monday_ten), Err(Unmet::Origin));
        assert_eq!(c.check(Some(&cert), Some(outside), monday_ten), Err(Unmet::Origin));
        assert_eq!(c.check(Some(&cert), None, monday_ten), Err(Unmet::Origin));
        assert_eq!(c.check(Some(&cert), Some(inside), saturday), Err(Unmet::Time));
        assert_eq!(c.check(Some(&cert), Some(inside), monday_seven), Err(Unmet::Time));
        // A zone nobody declared matches no address.
        let unknown = Origin { certificates: vec![], zones: vec!["elsewhere".into()] };
        let c = Conditions::compile(Some(&unknown), &[], &zones).unwrap();
        assert_eq!(c.check(None, Some(inside), monday_ten), Err(Unmet::Origin));
        assert!(Conditions::compile(None, &[], &zones).is_none());
    }
}
