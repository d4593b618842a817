//! The request mix: what to send, how often, and what each request should get back.
//!
//! ```toml
//! [[request]]
//! name = "association"
//! weight = 95
//! method = "GET"
//! path = "/associations/association"
//! headers = { x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING", x-subject = "V0001001" }
//! expect_status = 200
//!
//! [[request]]
//! name = "wrong-purpose"
//! weight = 5
//! method = "GET"
//! path = "/associations/association"
//! headers = { x-legal-basis = "VL/PROT/2022/017", x-purpose = "NOT_A_PURPOSE", x-subject = "V0001001" }
//! expect_status = 403
//! expect_code = "PURPOSE_NOT_ALLOWED"
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    pub request: Vec<RequestSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub name: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    #[serde(default = "ok")]
    pub expect_status: u16,
    /// The refusal code (`X-Passerelle-Code`) an intended refusal must carry.
    #[serde(default)]
    pub expect_code: Option<String>,
}

fn one() -> u32 {
    1
}
fn get() -> String {
    "GET".to_owned()
}
fn ok() -> u16 {
    200
}

/// A request ready to send, many times.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub index: usize,
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub body: Bytes,
    pub expect_status: u16,
    pub expect_code: Option<String>,
}

impl Prepared {
    pub fn request(&self) -> http::Request<http_body_util::Full<Bytes>> {
        let mut b = http::Request::builder().method(self.method.clone()).uri(self.path.as_str());
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        // Method, path and headers were checked when prepared.
        b.body(http_body_util::Full::new(self.body.clone())).unwrap_or_default()
    }
}

impl Mix {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mix: Mix = toml::from_str(text)?;
        anyhow::ensure!(!mix.request.is_empty(), "the mix names no request");
        anyhow::ensure!(mix.request.iter().any(|r| r.weight > 0), "every weight is 0");
        Ok(mix)
    }

    /// The requests, checked, and a table of `sum(weights)` slots to draw from.
    pub fn prepare(&self) -> anyhow::Result<(Vec<Prepared>, Vec<u16>)> {
        let mut out = Vec::with_capacity(self.request.len());
        let mut slots = Vec::new();
        for (i, r) in self.request.iter().enumerate() {
            let method = http::Method::from_bytes(r.method.as_bytes())?;
            let headers = r
                .headers
                .iter()
                .map(|(k, v)| Ok((http::HeaderName::from_bytes(k.as_bytes())?, http::HeaderValue::from_str(v)?)))
                .collect::<anyhow::Result<Vec<_>>>()
                .map_err(|e| anyhow::anyhow!("request '{}': {e}", r.name))?;
            let _: http::Uri = r.path.parse().map_err(|e| anyhow::anyhow!("request '{}': path: {e}", r.name))?;
            out.push(Prepared {
                index: i,
                method,
                path: r.path.clone(),
                headers,
                body: Bytes::from(r.body.clone()),
                expect_status: r.expect_status,
                expect_code: r.expect_code.clone(),
            });
            slots.extend(std::iter::repeat_n(i as u16, r.weight as usize));
        }
        Ok((out, slots))
    }
}

/// A small deterministic generator (xorshift) to draw from the mix without locks.
#[derive(Debug, Clone)]
pub struct Draw(u64);

impl Draw {
    pub fn new(seed: u64) -> Self {
        Draw(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n.max(1) as u64) as usize
    }
}
