//! XML of the SOAP sources (DIV): a hardened reader into a small element tree, the imposed
//! layout as a shape the tree is checked against, minimisation to the granted fields, and the
//! writer that puts the reduced answer back into a SOAP 1.1 envelope.
//!
//! Safety first: no DTD is accepted at all, so no entity can be declared, let alone expanded
//! (a billion-laughs document is refused at its `<!DOCTYPE`); only the five predefined entities
//! and character references are resolved; processing instructions and attributes other than
//! namespace declarations are refused; depth, element count and text length are capped.
//!
//! The shape mirrors the published XSD in `adapters/layouts/` (the contract). There is no XSD
//! engine in Rust worth depending on, so the gateway checks the shape, and the test suite runs
//! `xmllint --schema` over the same documents to show the two agree: what the gateway accepts,
//! the XSD accepts. The shape is stricter in two places, on purpose: national and enterprise
//! numbers must pass their mod-97 check, dates must be plain `YYYY-MM-DD`.
//!
//! Error messages name the element path and the rule, never a value.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::layout::SubjectType;

/// The SOAP 1.1 envelope namespace.
pub const SOAP_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The refusal of an `Envelope` in another namespace than SOAP 1.1's (SOAP 1.2's, or another
/// version): SOAP 1.1 §4.4.1 answers it with a `VersionMismatch` Fault.
pub const VERSION_MISMATCH: &str =
    "the Envelope is not in the SOAP 1.1 namespace (http://schemas.xmlsoap.org/soap/envelope/)";

/// Caps on what the reader accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_elements: usize,
    pub max_text: usize,
}

/// The caps used for every SOAP message, both ways.
pub const LIMITS: Limits = Limits { max_depth: 16, max_elements: 512, max_text: 1024 };

/// An element: namespace, local name, text and children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: String,
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn new(ns: &str, name: &str) -> Self {
        Element { ns: ns.to_owned(), name: name.to_owned(), ..Element::default() }
    }

    /// A child element holding text.
    pub fn leaf(mut self, name: &str, text: &str) -> Self {
        let ns = self.ns.clone();
        self.children.push(Element { ns, name: name.to_owned(), text: text.to_owned(), children: Vec::new() });
        self
    }

    pub fn child(mut self, c: Element) -> Self {
        self.children.push(c);
        self
    }

    pub fn find(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Reads a whole document into its root element.
pub fn parse(doc: &str, limits: Limits) -> Result<Element, String> {
    let mut reader = NsReader::from_str(doc);
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| format!("the body is not well-formed XML ({e})"))?;
        let ns = match ns {
            ResolveResult::Bound(n) => Some(n.as_ref().to_owned()),
            ResolveResult::Unbound => Some(String::new()),
            ResolveResult::Unknown(_) => None,
        };
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let name = s.local_name().as_ref().to_owned();
                let ns = ns.ok_or_else(|| format!("element {name} uses an undeclared namespace prefix"))?;
                if root.is_some() {
                    return Err("the document has more than one root element".into());
                }
                count += 1;
                if count > limits.max_elements {
                    return Err(format!("the document has more than {} elements", limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return Err(format!("the document nests deeper than {} elements", limits.max_depth));
                }
                for attr in s.attributes() {
                    let attr = attr.map_err(|e| format!("element {name} has a malformed attribute ({e})"))?;
                    let key = attr.key.as_ref();
                    if key != "xmlns" && !key.starts_with("xmlns:") {
                        return Err(format!("element {name} carries an attribute the layout does not have"));
                    }
                }
                let el = Element { ns, name, text: String::new(), children: Vec::new() };
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("an end tag without its start")?;
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content(), limits)?,
            Event::CData(t) => {
                push_text(&mut stack, t.as_ref(), limits)?;
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match r.as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        _ => return Err("the document refers to an undeclared entity (no DTD is accepted)".into()),
                    },
                    Err(_) => return Err("the document has an invalid character reference".into()),
                };
                let mut b = [0u8; 4];
                push_text(&mut stack, c.encode_utf8(&mut b), limits)?;
            }
            Event::DocType(_) => {
                return Err("a DOCTYPE is not accepted: no DTD, no entity declarations".into());
            }
            Event::PI(_) => return Err("processing instructions are not accepted".into()),
            Event::Decl(d) => {
                // The body is read as UTF-8: a declaration of any other encoding is a lie
                // about the bytes (or bytes we would misread), never forwarded as received.
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|_| "the XML declaration's encoding is unreadable".to_owned())?;
                    if !enc.eq_ignore_ascii_case("UTF-8") {
                        return Err(format!(
                            "the XML declaration names the encoding {:?}; the layout requires UTF-8",
                            enc.chars().take(40).collect::<String>()
                        ));
                    }
                }
            }
            Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err("the document ends before its root element is closed".into());
    }
    root.ok_or_else(|| "the document has no root element".into())
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn push_text(stack: &mut [Element], s: &str, limits: Limits) -> Result<(), String> {
    match stack.last_mut() {
        Some(el) => {
            if el.text.len() + s.len() > limits.max_text {
                return Err(format!("element {} holds more than {} bytes of text", el.name, limits.max_text));
            }
            el.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err("the document has text outside its root element".into()),
    }
}

/// The type of an element's text, as the XSD names it.
#[derive(Debug, Clone, Copy)]
pub enum Text {
    /// A string of `min..=max` characters.
    Str { min: usize, max: usize },
    /// `YYYY-MM-DD`, a real date.
    Date,
    /// One of these tokens.
    Enum(&'static [&'static str]),
    /// A typed identifier: the XSD type's name and its check.
    Id(&'static str, fn(&str) -> bool),
    /// A simple type compiled from a registered XSD ([`crate::xsd`]).
    Simple(&'static Simple),
}

/// An identifier's check (mod 97 and the like).
pub type IdCheck = fn(&str) -> bool;

/// The lexical space a compiled simple type restricts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimpleBase {
    String,
    /// `YYYY-MM-DD`, a real date (no time zone: stricter than `xs:date`).
    Date,
    Integer,
    Decimal,
}

/// A simple type of a registered XSD: its base and facets.
#[derive(Debug, Clone)]
pub struct Simple {
    /// The type's name in the XSD (or the built-in's), for messages.
    pub name: String,
    pub base: SimpleBase,
    /// Length in characters.
    pub min_len: usize,
    pub max_len: usize,
    /// Each restriction step's patterns (alternatives within a step), all of which must match.
    pub patterns: Vec<(String, regex::Regex)>,
    pub enumeration: Option<Vec<String>>,
    /// Inclusive bounds of an integer.
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// An identifier's check beyond the XSD (a data subject's national or enterprise number
    /// must pass mod 97): its name and the check.
    pub identifier: Option<(&'static str, IdCheck)>,
}

impl Simple {
    pub fn new(name: &str, base: SimpleBase) -> Self {
        Simple {
            name: name.to_owned(),
            base,
            min_len: 0,
            max_len: usize::MAX,
            patterns: Vec::new(),
            enumeration: None,
            min: None,
            max: None,
            identifier: None,
        }
    }

    /// Whether `s` is a value of the type; the error says which facet fails, never the value.
    pub fn check(&self, s: &str) -> Result<(), String> {
        if self.base == SimpleBase::Date && !date_ok(s) {
            return Err("is not a date (YYYY-MM-DD)".into());
        }
        let n = s.chars().count();
        if n < self.min_len || n > self.max_len {
            return Err(if self.max_len == usize::MAX {
                format!("must hold at least {} characters", self.min_len)
            } else {
                format!("must hold {} to {} characters", self.min_len, self.max_len)
            });
        }
        if let Some(values) = &self.enumeration
            && !values.iter().any(|v| v == s)
        {
            return Err(format!("must be one of {}", values.join(", ")));
        }
        if let Some((p, _)) = self.patterns.iter().find(|(_, re)| !re.is_match(s)) {
            return Err(format!("does not match the pattern {p} of {}", self.name));
        }
        if let Some((name, ok)) = self.identifier
            && !ok(s)
        {
            return Err(format!("is not a valid {name}"));
        }
        if self.base == SimpleBase::Integer && (self.min.is_some() || self.max.is_some()) {
            let v: i64 =
                s.trim_start_matches('+').parse().map_err(|_| format!("is not an integer of {}", self.name))?;
            if let Some(min) = self.min.filter(|m| v < *m) {
                return Err(format!("must be at least {min}"));
            }
            if let Some(max) = self.max.filter(|m| v > *m) {
                return Err(format!("must be at most {max}"));
            }
        }
        Ok(())
    }
}

/// What an element of the shape holds.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Text(Text),
    /// These elements, in this order, each `min..=max` times.
    Seq(&'static [Node]),
    /// Exactly one of these elements.
    Choice(&'static [Node]),
}

/// An element of the imposed layout.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub name: &'static str,
    pub min: u8,
    pub max: u8,
    pub kind: Kind,
    /// The grantable field this element carries, if any: without the grant it does not leave.
    pub field: Option<&'static str>,
    /// A data subject is identified by this element's text.
    pub subject: Option<SubjectType>,
}

impl Node {
    /// A required element occurring once.
    pub const fn one(name: &'static str, kind: Kind) -> Self {
        Node { name, min: 1, max: 1, kind, field: None, subject: None }
    }

    /// An optional element occurring at most once.
    pub const fn opt(name: &'static str, kind: Kind) -> Self {
        Node { name, min: 0, max: 1, kind, field: None, subject: None }
    }

    pub const fn field(mut self, f: &'static str) -> Self {
        self.field = Some(f);
        self
    }

    pub const fn subject(mut self, s: SubjectType) -> Self {
        self.subject = Some(s);
        self
    }
}

fn date_ok(s: &str) -> bool {
    s.len() == 10 && time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

fn text_ok(t: Text, s: &str) -> Result<(), String> {
    let why = match t {
        Text::Str { min, max } => {
            (!(min..=max).contains(&s.chars().count())).then(|| format!("must hold {min} to {max} characters"))
        }
        Text::Date => (!date_ok(s)).then(|| "is not a date (YYYY-MM-DD)".into()),
        Text::Enum(tokens) => (!tokens.contains(&s)).then(|| format!("must be one of {}", tokens.join(", "))),
        Text::Id(name, check) => (!check(s)).then(|| format!("is not a valid {name}")),
        Text::Simple(simple) => return simple.check(s),
    };
    why.map_or(Ok(()), Err)
}

/// Checks `el` against `node`; the error names the path of the first offending element.
pub fn check(el: &Element, node: &Node, ns: &str, path: &str) -> Result<(), String> {
    let path = format!("{path}/{}", el.name);
    if el.name != node.name || el.ns != ns {
        return Err(format!("at {path}: element not allowed here, {} expected", node.name));
    }
    match node.kind {
        Kind::Text(t) => {
            if !el.children.is_empty() {
                return Err(format!("at {path}: child elements where text belongs"));
            }
            text_ok(t, &el.text).map_err(|why| format!("at {path}: the text {why}"))
        }
        Kind::Seq(nodes) => {
            only_whitespace(el, &path)?;
            let mut rest = el.children.as_slice();
            for n in nodes {
                let k = rest.iter().take_while(|c| c.name == n.name && c.ns == ns).count();
                if k < usize::from(n.min) {
                    return Err(format!("at {path}: {} is missing", n.name));
                }
                if k > usize::from(n.max) {
                    return Err(format!("at {path}: {} appears more than {} times", n.name, n.max));
                }
                for c in &rest[..k] {
                    check(c, n, ns, &path)?;
                }
                rest = &rest[k..];
            }
            match rest.first() {
                None => Ok(()),
                Some(c) => Err(format!("at {path}/{}: element not allowed here", c.name)),
            }
        }
        Kind::Choice(nodes) => {
            only_whitespace(el, &path)?;
            let [c] = el.children.as_slice() else {
                let names: Vec<&str> = nodes.iter().map(|n| n.name).collect();
                return Err(format!("at {path}: exactly one of {} expected", names.join(", ")));
            };
            match nodes.iter().find(|n| n.name == c.name) {
                Some(n) => check(c, n, ns, &path),
                None => Err(format!("at {path}/{}: element not allowed here", c.name)),
            }
        }
    }
}

fn only_whitespace(el: &Element, path: &str) -> Result<(), String> {
    if el.text.trim().is_empty() { Ok(()) } else { Err(format!("at {path}: text where only elements belong")) }
}

fn child_nodes(node: &Node) -> &'static [Node] {
    match node.kind {
        Kind::Seq(n) | Kind::Choice(n) => n,
        Kind::Text(_) => &[],
    }
}

/// Keeps what the grant allows: an element carrying a field leaves only with its grant; a
/// container without a field leaves if anything in it does (or if the layout requires it).
/// `el` must have passed [`check`] against `node`.
pub fn minimise(el: Element, node: &Node, granted: &impl Fn(&str) -> bool) -> Option<Element> {
    if let Some(f) = node.field {
        return granted(f).then_some(el);
    }
    let nodes = child_nodes(node);
    if nodes.is_empty() {
        return Some(el);
    }
    let Element { ns, name, text, children } = el;
    let children: Vec<Element> = children
        .into_iter()
        .filter_map(|c| {
            let n = nodes.iter().find(|n| n.name == c.name)?;
            minimise(c, n, granted)
        })
        .collect();
    if children.is_empty() && node.min == 0 {
        return None;
    }
    Some(Element { ns, name, text, children })
}

/// The data subjects `el` names.
pub fn subjects(el: &Element, node: &Node, out: &mut Vec<(SubjectType, String)>) {
    if let Some(kind) = node.subject {
        out.push((kind, el.text.clone()));
    }
    let nodes = child_nodes(node);
    for c in &el.children {
        if let Some(n) = nodes.iter().find(|n| n.name == c.name) {
            subjects(c, n, out);
        }
    }
}

/// Writes `el` (and what it holds) with its namespace as the default namespace.
pub fn write(el: &Element, out: &mut String) {
    write_el(el, "", out);
}

fn write_el(el: &Element, parent_ns: &str, out: &mut String) {
    out.push('<');
    out.push_str(&el.name);
    if el.ns != parent_ns {
        out.push_str(" xmlns=\"");
        out.push_str(&quick_xml::escape::escape(el.ns.as_str()));
        out.push('"');
    }
    if el.children.is_empty() && el.text.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    if el.children.is_empty() {
        out.push_str(&quick_xml::escape::escape(el.text.as_str()));
    }
    for c in &el.children {
        write_el(c, &el.ns, out);
    }
    out.push_str("</");
    out.push_str(&el.name);
    out.push('>');
}

/// A SOAP 1.1 envelope around `payload`.
pub fn envelope(payload: &Element) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str(r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>"#);
    write(payload, &mut out);
    out.push_str("</soap:Body></soap:Envelope>");
    out
}

/// A SOAP 1.1 fault (`soap:Client` or `soap:Server`) with a message that names no value.
pub fn fault(code: &str, message: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{}</faultstring></soap:Fault></soap:Body></soap:Envelope>"#,
        quick_xml::escape::escape(message)
    )
}

/// Opens a SOAP 1.1 envelope: `Envelope`, an optional `Header` (not read), a `Body` with
/// exactly one element, which is returned.
pub fn open_envelope(doc: &[u8], limits: Limits) -> Result<Element, String> {
    let doc = std::str::from_utf8(doc).map_err(|_| "the body is not UTF-8")?;
    let root = parse(doc, limits)?;
    if root.name == "Envelope" && root.ns != SOAP_NS {
        return Err(VERSION_MISMATCH.into());
    }
    if root.name != "Envelope" {
        return Err("the document is not a SOAP 1.1 Envelope".into());
    }
    only_whitespace(&root, "/Envelope")?;
    let mut parts = root.children.into_iter();
    let mut next = parts.next();
    if next.as_ref().is_some_and(|h| h.ns == SOAP_NS && h.name == "Header") {
        next = parts.next();
    }
    let body = next.filter(|b| b.ns == SOAP_NS && b.name == "Body").ok_or("at /Envelope: Body is missing")?;
    if let Some(extra) = parts.next() {
        return Err(format!("at /Envelope/{}: element not allowed after Body", extra.name));
    }
    only_whitespace(&body, "/Envelope/Body")?;
    let mut inside = body.children.into_iter();
    match (inside.next(), inside.next()) {
        (Some(payload), None) => Ok(payload),
        _ => Err("at /Envelope/Body: exactly one element expected".into()),
    }
}

/// A SOAP service's imposed layout: its namespace and the shapes of request and answer.
#[derive(Debug, Clone, Copy)]
pub struct SoapLayout {
    pub ns: &'static str,
    pub request: Node,
    pub response: Node,
}

impl SoapLayout {
    /// Opens and checks a request; returns its payload.
    pub fn check_request(&self, body: &[u8]) -> Result<Element, String> {
        let payload = open_envelope(body, LIMITS)?;
        check(&payload, &self.request, self.ns, "/Envelope/Body")?;
        Ok(payload)
    }

    /// Opens and checks an answer; returns its payload.
    pub fn check_response(&self, body: &[u8]) -> Result<Element, String> {
        let payload = open_envelope(body, LIMITS)?;
        if payload.ns == SOAP_NS && payload.name == "Fault" {
            return Err("the source answered a SOAP Fault with HTTP 200".into());
        }
        check(&payload, &self.response, self.ns, "/Envelope/Body")?;
        Ok(payload)
    }

    /// Every grantable field of the answer.
    pub fn fields(&self) -> Vec<&'static str> {
        fn walk(n: &Node, out: &mut Vec<&'static str>) {
            out.extend(n.field);
            child_nodes(n).iter().for_each(|c| walk(c, out));
        }
        let mut out = Vec::new();
        walk(&self.response, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NS: &str = "urn:test";
    const ITEM: &[Node] = &[
        Node::one("Id", Kind::Text(Text::Str { min: 1, max: 8 })).subject(SubjectType::Person),
        Node::opt("Colour", Kind::Text(Text::Enum(&["red", "blue"]))).field("colour"),
        Node::opt("Since", Kind::Text(Text::Date)).field("since"),
    ];
    const ROOT: Node = Node::one("Answer", Kind::Seq(&[Node::one("Item", Kind::Seq(ITEM))]));

    fn doc(inner: &str) -> String {
        format!(r#"<?xml version="1.0"?><s:Envelope xmlns:s="{SOAP_NS}"><s:Body>{inner}</s:Body></s:Envelope>"#)
    }

    fn layout() -> SoapLayout {
        SoapLayout { ns: NS, request: ROOT, response: ROOT }
    }

    #[test]
    fn a_conforming_document_passes_and_is_minimised() {
        let d = doc(
            r#"<a:Answer xmlns:a="urn:test"><a:Item><a:Id>x&amp;y</a:Id><a:Colour>red</a:Colour></a:Item></a:Answer>"#,
        );
        let p = layout().check_request(d.as_bytes()).unwrap();
        assert_eq!(p.children[0].children[0].text, "x&y");
        let mut found = Vec::new();
        subjects(&p, &ROOT, &mut found);
        assert_eq!(found, vec![(SubjectType::Person, "x&y".to_owned())]);
        let m = minimise(p, &ROOT, &|f| f == "since").unwrap();
        let mut out = String::new();
        write(&m, &mut out);
        assert_eq!(out, r#"<Answer xmlns="urn:test"><Item><Id>x&amp;y</Id></Item></Answer>"#);
        let again = open_envelope(envelope(&m).as_bytes(), LIMITS).unwrap();
        assert!(check(&again, &ROOT, NS, "").is_ok());
    }

    #[test]
    fn refusals_name_the_path_and_the_rule() {
        let cases = [
            (
                r#"<Answer xmlns="urn:test"><Item><Id>1</Id><Colour>green</Colour></Item></Answer>"#,
                "at /Envelope/Body/Answer/Item/Colour: the text must be one of red, blue",
            ),
            (
                r#"<Answer xmlns="urn:test"><Item><Colour>red</Colour></Item></Answer>"#,
                "at /Envelope/Body/Answer/Item: Id is missing",
            ),
            (
                r#"<Answer xmlns="urn:test"><Item><Id>1</Id><Size>3</Size></Item></Answer>"#,
                "at /Envelope/Body/Answer/Item/Size: element not allowed here",
            ),
            (
                r#"<Answer xmlns="urn:other"><Item><Id>1</Id></Item></Answer>"#,
                "at /Envelope/Body/Answer: element not allowed here, Answer expected",
            ),
            (
                r#"<Answer xmlns="urn:test"><Item><Id>1</Id><Since>2026-02-30</Since></Item></Answer>"#,
                "at /Envelope/Body/Answer/Item/Since: the text is not a date (YYYY-MM-DD)",
            ),
            (
                r#"<Answer xmlns="urn:test"><Item id="1"><Id>1</Id></Item></Answer>"#,
                "element Item carries an attribute the layout does not have",
            ),
        ];
        for (inner, want) in cases {
            assert_eq!(layout().check_request(doc(inner).as_bytes()).unwrap_err(), want);
        }
    }

    #[test]
    fn only_utf8_may_be_declared() {
        let inner = r#"<a:Answer xmlns:a="urn:test"><a:Item><a:Id>1</a:Id></a:Item></a:Answer>"#;
        let with =
            |decl: &str| format!(r#"{decl}<s:Envelope xmlns:s="{SOAP_NS}"><s:Body>{inner}</s:Body></s:Envelope>"#);
        for ok in [
            r#"<?xml version="1.0"?>"#,
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<?xml version="1.0" encoding='utf-8'?>"#,
            "",
        ] {
            assert!(layout().check_request(with(ok).as_bytes()).is_ok(), "{ok}");
        }
        for bad in ["UTF-16", "ISO-8859-1", "windows-1252", "UTF8"] {
            let d = with(&format!(r#"<?xml version="1.0" encoding="{bad}"?>"#));
            let e = layout().check_request(d.as_bytes()).unwrap_err();
            assert!(e.contains("requires UTF-8") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn hostile_documents_are_refused_not_expanded() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert!(parse(laughs, LIMITS).unwrap_err().contains("DOCTYPE"));
        assert!(parse("<a>&lol;</a>", LIMITS).unwrap_err().contains("undeclared entity"));
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert!(parse(&deep, LIMITS).unwrap_err().contains("deeper"));
        let wide = format!("<a>{}</a>", "<b/>".repeat(600));
        assert!(parse(&wide, LIMITS).unwrap_err().contains("more than 512 elements"));
        let long = format!("<a>{}</a>", "x".repeat(2000));
        assert!(parse(&long, LIMITS).unwrap_err().contains("more than 1024 bytes"));
        assert!(parse("<?php x?><a/>", LIMITS).is_err());
        assert!(parse("<a></b>", LIMITS).unwrap_err().contains("not well-formed"));
        assert!(parse("<a/><b/>", LIMITS).unwrap_err().contains("more than one root"));
        assert!(parse("<p:a/>", LIMITS).unwrap_err().contains("undeclared namespace"));
        assert_eq!(parse("<a>&#x41;&lt;</a>", LIMITS).unwrap().text, "A<");
    }
}
