//! The subset of XSD that imposed layouts use, compiled into the shape [`crate::xml::check`]
//! enforces: a registered SOAP service's layout is checked by the same hardened code as the
//! built-in DIV layout, never by an XSD engine.
//!
//! Inside the subset: one `xs:schema` with a `targetNamespace` and
//! `elementFormDefault="qualified"`; global `xs:element`, `xs:complexType` and `xs:simpleType`;
//! a complex type holding one `xs:sequence` or `xs:choice` of `xs:element`s (by `name` with a
//! `type` or an inline type, or by `ref`), each with `minOccurs` / `maxOccurs` (`unbounded`
//! means the most the reader accepts); simple types restricting a built-in type (`string`,
//! `normalizedString`, `token`, `date`, `int`, `integer`, `long`, `short`, `positiveInteger`,
//! `nonNegativeInteger`, `decimal`, `boolean`) or another simple type of the schema with
//! `pattern`, `enumeration`, `length`, `minLength`, `maxLength`, `minInclusive`, `maxInclusive`;
//! `xs:annotation` anywhere. Anything else — attributes, `xs:any`, `xs:all`, mixed or
//! simple/complex content, nested groups, imports and includes, recursion, `nillable`,
//! defaults, substitution groups, lists and unions — is refused with a message naming the
//! construct and where it is, so a layout is never checked more loosely than it reads.

use std::collections::HashMap;

use quick_xml::events::Event;
use quick_xml::reader::NsReader;

use crate::xml::{Kind, Node, Simple, SimpleBase, Text};

/// The XML Schema namespace.
pub const XS_NS: &str = "http://www.w3.org/2001/XMLSchema";

/// Most occurrences a `maxOccurs="unbounded"` element may have: the node's counter's range.
pub const UNBOUNDED: u8 = u8::MAX;

/// The XSD's largest accepted size: imposed layouts are a few kilobytes.
pub const MAX_XSD_BYTES: usize = 256 * 1024;

/// A schema element as read: local name, attributes, children (annotations dropped).
#[derive(Debug, Clone)]
struct Xs {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Xs>,
}

impl Xs {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// An element declaration compiled to an owned tree, before it is frozen into [`Node`]s.
#[derive(Debug, Clone)]
pub struct Decl {
    pub name: String,
    pub min: u8,
    pub max: u8,
    pub kind: DeclKind,
}

#[derive(Debug, Clone)]
pub enum DeclKind {
    Text(Simple),
    Seq(Vec<Decl>),
    Choice(Vec<Decl>),
}

/// A compiled schema: its target namespace and its global elements.
#[derive(Debug, Clone)]
pub struct Schema {
    pub target_ns: String,
    pub elements: HashMap<String, Decl>,
}

/// Reads and compiles `text`. The error names the construct and its place.
pub fn compile(text: &str) -> Result<Schema, String> {
    if text.len() > MAX_XSD_BYTES {
        return Err(format!("the XSD is larger than {MAX_XSD_BYTES} bytes"));
    }
    let (root, prefixes) = read(text)?;
    if root.name != "schema" {
        return Err(format!("the XSD's root is xs:{}, not xs:schema", root.name));
    }
    for (k, v) in &root.attrs {
        match k.as_str() {
            "targetNamespace" | "version" | "id" => {}
            "elementFormDefault" if v == "qualified" => {}
            "elementFormDefault" => {
                return Err(
                    "elementFormDefault must be \"qualified\": every element of the layout is in its namespace".into(),
                );
            }
            "attributeFormDefault" => {}
            other => {
                return Err(format!("xs:schema attribute {other} is outside the subset of XSD imposed layouts use"));
            }
        }
    }
    if root.attr("elementFormDefault") != Some("qualified") {
        return Err("elementFormDefault must be \"qualified\": every element of the layout is in its namespace".into());
    }
    let target_ns = root.attr("targetNamespace").ok_or("the xs:schema has no targetNamespace")?.to_owned();
    let mut c = Compiler {
        target_ns: target_ns.clone(),
        prefixes,
        elements: HashMap::new(),
        complex: HashMap::new(),
        simple: HashMap::new(),
        stack: Vec::new(),
    };
    for g in &root.children {
        let name = || g.attr("name").map(str::to_owned).ok_or_else(|| format!("a global xs:{} has no name", g.name));
        let table = match g.name.as_str() {
            "element" => &mut c.elements,
            "complexType" => &mut c.complex,
            "simpleType" => &mut c.simple,
            other => return Err(outside(other, "/xs:schema")),
        };
        if table.insert(name()?, g.clone()).is_some() {
            return Err(format!("global xs:{} {} is declared twice", g.name, name()?));
        }
    }
    let mut elements = HashMap::new();
    let names: Vec<String> = c.elements.keys().cloned().collect();
    for n in names {
        let decl = c.global_element(&n, "/xs:schema")?;
        elements.insert(n, decl);
    }
    Ok(Schema { target_ns, elements })
}

fn outside(construct: &str, at: &str) -> String {
    format!("xs:{construct} at {at} is outside the subset of XSD imposed layouts use")
}

/// Parses the XSD into [`Xs`] elements (XML Schema namespace only, annotations skipped) and
/// the namespace prefixes it declares.
fn read(text: &str) -> Result<(Xs, HashMap<String, String>), String> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Xs> = Vec::new();
    let mut root = None;
    let mut prefixes = HashMap::new();
    let mut skipping = 0usize;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| format!("the XSD is not well-formed XML ({e})"))?;
        let in_xs = matches!(ns, quick_xml::name::ResolveResult::Bound(n) if n.as_ref() == XS_NS);
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let empty = matches!(event, Event::Empty(_));
                if skipping > 0 {
                    skipping += usize::from(!empty);
                    continue;
                }
                let name = s.local_name().as_ref().to_owned();
                if !in_xs {
                    return Err(format!("element {name} of the XSD is not in the XML Schema namespace"));
                }
                if name == "annotation" {
                    skipping = usize::from(!empty);
                    continue;
                }
                if stack.len() > 32 {
                    return Err("the XSD nests deeper than 32 elements".into());
                }
                let mut attrs = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(|e| format!("xs:{name} has a malformed attribute ({e})"))?;
                    let key = a.key.as_ref().to_owned();
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::default())
                        .map_err(|e| format!("xs:{name} {key}: {e}"))?
                        .into_owned();
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        let prefix = key.strip_prefix("xmlns:").unwrap_or("").to_owned();
                        if prefixes.insert(prefix.clone(), value.clone()).is_some_and(|old| old != value) {
                            return Err(format!("the prefix {prefix:?} is declared twice with different namespaces"));
                        }
                        continue;
                    }
                    attrs.push((key, value));
                }
                let el = Xs { name, attrs, children: Vec::new() };
                if empty {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                if skipping > 0 {
                    skipping -= 1;
                    continue;
                }
                let el = stack.pop().ok_or("an end tag without its start")?;
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) if skipping == 0 && !t.xml10_content().trim().is_empty() => {
                return Err("the XSD holds text outside xs:annotation".into());
            }
            Event::DocType(_) => return Err("a DOCTYPE is not accepted in an XSD".into()),
            Event::Eof => break,
            _ => {}
        }
    }
    Ok((root.ok_or("the XSD has no root element")?, prefixes))
}

fn close(stack: &mut [Xs], root: &mut Option<Xs>, el: Xs) {
    match stack.last_mut() {
        Some(p) => p.children.push(el),
        None => *root = Some(el),
    }
}

struct Compiler {
    target_ns: String,
    prefixes: HashMap<String, String>,
    elements: HashMap<String, Xs>,
    complex: HashMap<String, Xs>,
    simple: HashMap<String, Xs>,
    /// The named types being compiled, to refuse recursion.
    stack: Vec<String>,
}

/// A type reference resolved: a built-in XSD type, or one of the schema's own.
enum TypeRef<'a> {
    Builtin(&'a str),
    Own(&'a str),
}

impl Compiler {
    fn resolve<'a>(&self, qname: &'a str, at: &str) -> Result<TypeRef<'a>, String> {
        let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
        let ns =
            self.prefixes.get(prefix).ok_or_else(|| format!("at {at}: the prefix of {qname:?} is not declared"))?;
        if ns == XS_NS {
            Ok(TypeRef::Builtin(local))
        } else if *ns == self.target_ns {
            Ok(TypeRef::Own(local))
        } else {
            Err(format!(
                "at {at}: {qname:?} is in another namespace than the schema's (imports are outside the subset)"
            ))
        }
    }

    fn global_element(&mut self, name: &str, at: &str) -> Result<Decl, String> {
        let x = self.elements.get(name).cloned().ok_or_else(|| format!("at {at}: no global element {name}"))?;
        let at = format!("{at}/xs:element[@name='{name}']");
        for (k, _) in &x.attrs {
            if !matches!(k.as_str(), "name" | "type") {
                return Err(format!("at {at}: attribute {k} is outside the subset of XSD imposed layouts use"));
            }
        }
        let key = format!("element {name}");
        if self.stack.contains(&key) {
            return Err(format!("at {at}: element {name} refers to itself (recursion is outside the subset)"));
        }
        self.stack.push(key);
        let kind = self.element_type(&x, &at);
        self.stack.pop();
        Ok(Decl { name: name.to_owned(), min: 1, max: 1, kind: kind? })
    }

    /// A local `xs:element` of a sequence or choice.
    fn local_element(&mut self, x: &Xs, at: &str) -> Result<Decl, String> {
        for (k, _) in &x.attrs {
            if !matches!(k.as_str(), "name" | "type" | "ref" | "minOccurs" | "maxOccurs") {
                return Err(format!(
                    "at {at}: attribute {k} of xs:element is outside the subset of XSD imposed layouts use"
                ));
            }
        }
        let (min, max) = occurs(x, at)?;
        if let Some(r) = x.attr("ref") {
            if x.attr("name").is_some() || x.attr("type").is_some() || !x.children.is_empty() {
                return Err(format!("at {at}: an element by ref has no name, type or inline type"));
            }
            let TypeRef::Own(local) = self.resolve(r, at)? else {
                return Err(format!("at {at}: ref {r:?} names no element of the schema"));
            };
            let mut d = self.global_element(local, at)?;
            (d.min, d.max) = (min, max);
            return Ok(d);
        }
        let name = x.attr("name").ok_or_else(|| format!("at {at}: an xs:element has neither name nor ref"))?;
        let at = format!("{at}/xs:element[@name='{name}']");
        Ok(Decl { name: name.to_owned(), min, max, kind: self.element_type(x, &at)? })
    }

    /// The type of an element: its `type` attribute or its one inline type.
    fn element_type(&mut self, x: &Xs, at: &str) -> Result<DeclKind, String> {
        match (x.attr("type"), x.children.as_slice()) {
            (Some(t), []) => self.named_type(t, at),
            (None, [inline]) if inline.name == "complexType" => self.complex_type(inline, at),
            (None, [inline]) if inline.name == "simpleType" => Ok(DeclKind::Text(self.simple_type(inline, at)?)),
            (None, []) => Err(format!("at {at}: the element has no type (xs:anyType is outside the subset)")),
            (Some(_), [_, ..]) => Err(format!("at {at}: the element has both a type attribute and an inline type")),
            (None, [c, ..]) => Err(outside(&c.name, at)),
        }
    }

    fn named_type(&mut self, qname: &str, at: &str) -> Result<DeclKind, String> {
        match self.resolve(qname, at)? {
            TypeRef::Builtin(b) => Ok(DeclKind::Text(builtin(b, at)?)),
            TypeRef::Own(local) => {
                if let Some(x) = self.simple.get(local).cloned() {
                    return Ok(DeclKind::Text(self.simple_type(&x, at)?));
                }
                let x = self
                    .complex
                    .get(local)
                    .cloned()
                    .ok_or_else(|| format!("at {at}: type {qname:?} is not declared"))?;
                let key = format!("type {local}");
                if self.stack.contains(&key) {
                    return Err(format!("at {at}: type {local} contains itself (recursion is outside the subset)"));
                }
                self.stack.push(key);
                let k = self.complex_type(&x, &format!("{at}/xs:complexType[@name='{local}']"));
                self.stack.pop();
                k
            }
        }
    }

    fn complex_type(&mut self, x: &Xs, at: &str) -> Result<DeclKind, String> {
        if let Some((k, _)) = x.attrs.iter().find(|(k, _)| k != "name") {
            return Err(format!(
                "at {at}: attribute {k} of xs:complexType is outside the subset of XSD imposed layouts use"
            ));
        }
        let [group] = x.children.as_slice() else {
            return match x.children.first() {
                None => Err(format!("at {at}: an empty xs:complexType is outside the subset")),
                Some(_) => Err(format!("at {at}: a complex type holds exactly one xs:sequence or xs:choice")),
            };
        };
        let at = format!("{at}/xs:{}", group.name);
        if !matches!(group.name.as_str(), "sequence" | "choice") {
            return Err(outside(&group.name, &at));
        }
        if let Some((k, v)) =
            group.attrs.iter().find(|(k, v)| !(matches!(k.as_str(), "minOccurs" | "maxOccurs") && v == "1"))
        {
            return Err(format!("at {at}: {k}=\"{v}\" on a group is outside the subset (occurrences go on elements)"));
        }
        let mut items = Vec::with_capacity(group.children.len());
        for c in &group.children {
            if c.name != "element" {
                return Err(outside(&c.name, &at));
            }
            let d = self.local_element(c, &at)?;
            if items.iter().any(|i: &Decl| i.name == d.name) {
                return Err(format!("at {at}: element {} appears twice in the group", d.name));
            }
            items.push(d);
        }
        if items.is_empty() {
            return Err(format!("at {at}: an empty group is outside the subset"));
        }
        if group.name == "choice" {
            if items.iter().any(|d| d.min != 1 || d.max != 1) {
                return Err(format!(
                    "at {at}: occurrences inside xs:choice are outside the subset (exactly one is chosen)"
                ));
            }
            Ok(DeclKind::Choice(items))
        } else {
            Ok(DeclKind::Seq(items))
        }
    }

    fn simple_type(&mut self, x: &Xs, at: &str) -> Result<Simple, String> {
        let name = x.attr("name");
        let at = name.map_or_else(|| format!("{at}/xs:simpleType"), |n| format!("{at}/xs:simpleType[@name='{n}']"));
        let [r] = x.children.as_slice() else {
            return Err(format!("at {at}: a simple type holds exactly one xs:restriction"));
        };
        if r.name != "restriction" {
            return Err(outside(&r.name, &at));
        }
        let at = format!("{at}/xs:restriction");
        let base = r.attr("base").ok_or_else(|| format!("at {at}: the restriction has no base"))?;
        let mut s = match self.resolve(base, &at)? {
            TypeRef::Builtin(b) => builtin(b, &at)?,
            TypeRef::Own(local) => {
                let key = format!("type {local}");
                if self.stack.contains(&key) {
                    return Err(format!("at {at}: type {local} restricts itself"));
                }
                let parent = self
                    .simple
                    .get(local)
                    .cloned()
                    .ok_or_else(|| format!("at {at}: base {base:?} is not a simple type of the schema"))?;
                self.stack.push(key);
                let s = self.simple_type(&parent, &at);
                self.stack.pop();
                s?
            }
        };
        if let Some(n) = name {
            s.name = n.to_owned();
        }
        let mut patterns = Vec::new();
        let mut enumeration = Vec::new();
        for f in &r.children {
            let v = f.attr("value").ok_or_else(|| format!("at {at}/xs:{}: the facet has no value", f.name))?;
            let int = || v.parse::<usize>().map_err(|_| format!("at {at}/xs:{}: {v:?} is not a length", f.name));
            let bound = || v.parse::<i64>().map_err(|_| format!("at {at}/xs:{}: {v:?} is not an integer", f.name));
            match f.name.as_str() {
                "pattern" => patterns.push(v.to_owned()),
                "enumeration" => enumeration.push(v.to_owned()),
                "length" => (s.min_len, s.max_len) = (int()?, int()?),
                "minLength" => s.min_len = s.min_len.max(int()?),
                "maxLength" => s.max_len = s.max_len.min(int()?),
                "minInclusive" | "maxInclusive" if s.base == SimpleBase::Integer => {
                    if f.name == "minInclusive" {
                        s.min = Some(bound()?);
                    } else {
                        s.max = Some(bound()?);
                    }
                }
                other => return Err(outside(other, &at)),
            }
        }
        if !patterns.is_empty() {
            // Patterns of one step are alternatives; a restriction of a restricted type must
            // match both (XSD §4.3.4): the parent's stays.
            let re = patterns.iter().map(|p| format!("(?:{})", xsd_regex(p))).collect::<Vec<_>>().join("|");
            let re = regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("at {at}/xs:pattern: {e}"))?;
            s.patterns.push((patterns.join(" | "), re));
        }
        if !enumeration.is_empty() {
            if let Some(old) = &s.enumeration
                && let Some(bad) = enumeration.iter().find(|e| !old.contains(e))
            {
                return Err(format!("at {at}/xs:enumeration: {bad:?} is not a value of the base type"));
            }
            s.enumeration = Some(enumeration);
        }
        if s.min_len > s.max_len {
            return Err(format!("at {at}: minLength is above maxLength"));
        }
        Ok(s)
    }
}

/// `minOccurs` / `maxOccurs` of a local element.
fn occurs(x: &Xs, at: &str) -> Result<(u8, u8), String> {
    let read = |key: &str| -> Result<u8, String> {
        match x.attr(key) {
            None => Ok(1),
            Some("unbounded") if key == "maxOccurs" => Ok(UNBOUNDED),
            Some(v) => v
                .parse::<u8>()
                .ok()
                .filter(|n| *n < UNBOUNDED)
                .ok_or_else(|| format!("at {at}: {key}=\"{v}\" (at most {} or \"unbounded\")", UNBOUNDED - 1)),
        }
    };
    let (min, max) = (read("minOccurs")?, read("maxOccurs")?);
    if max == 0 || min > max {
        return Err(format!("at {at}: minOccurs {min} and maxOccurs {max} admit no element"));
    }
    Ok((min, max))
}

/// The built-in types of the subset.
fn builtin(name: &str, at: &str) -> Result<Simple, String> {
    let s = |base, pattern: Option<&str>| {
        let mut s = Simple::new(name, base);
        if let Some(p) = pattern
            && let Ok(re) = regex::Regex::new(&format!("^(?:{p})$"))
        {
            s.patterns.push((p.to_owned(), re));
        }
        s
    };
    Ok(match name {
        "string" | "normalizedString" | "token" => s(SimpleBase::String, None),
        "date" => s(SimpleBase::Date, None),
        "int" | "integer" | "long" | "short" => s(SimpleBase::Integer, Some("[+-]?[0-9]+")),
        "positiveInteger" => {
            let mut x = s(SimpleBase::Integer, Some("[+]?[0-9]+"));
            x.min = Some(1);
            x
        }
        "nonNegativeInteger" => {
            let mut x = s(SimpleBase::Integer, Some("[+]?[0-9]+"));
            x.min = Some(0);
            x
        }
        "decimal" => s(SimpleBase::Decimal, Some(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")),
        "boolean" => {
            let mut x = s(SimpleBase::String, None);
            x.enumeration = Some(["true", "false", "1", "0"].map(str::to_owned).to_vec());
            x
        }
        other => {
            return Err(format!(
                "at {at}: the built-in type xs:{other} is outside the subset of XSD imposed layouts use"
            ));
        }
    })
}

/// An XSD regular expression in the `regex` crate's syntax: XSD patterns are anchored (the
/// caller anchors them) and have no `^`/`$` anchors of their own, so those are literal.
fn xsd_regex(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 8);
    let mut escaped = false;
    for c in p.chars() {
        if escaped {
            out.push('\\');
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '^' || c == '$' {
            out.push('\\');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}

impl Decl {
    /// Freezes the tree into the `'static` nodes the shape check walks. The caller keeps the
    /// result for the process's life (registered layouts are compiled once per distinct text).
    pub fn freeze(
        &self,
        mark: &impl Fn(&[&str]) -> (Option<&'static str>, Option<crate::layout::SubjectType>),
    ) -> Node {
        self.freeze_at(&mut Vec::new(), mark)
    }

    fn freeze_at<'a>(
        &'a self,
        path: &mut Vec<&'a str>,
        mark: &impl Fn(&[&str]) -> (Option<&'static str>, Option<crate::layout::SubjectType>),
    ) -> Node {
        let name: &'static str = crate::registered::intern(&self.name);
        let (field, subject) = mark(path);
        let kind = match &self.kind {
            DeclKind::Text(s) => {
                let mut s = s.clone();
                // A data subject's identifier passes its check, as in a built-in layout.
                s.identifier = match subject {
                    Some(crate::layout::SubjectType::Person) => {
                        Some(("national number", |v| policies::ids::Niss::parse(v).is_ok()))
                    }
                    Some(crate::layout::SubjectType::Organisation) => {
                        Some(("enterprise number", |v| policies::ids::Kbo::parse(v).is_ok()))
                    }
                    None => None,
                };
                Kind::Text(Text::Simple(Box::leak(Box::new(s))))
            }
            DeclKind::Seq(items) | DeclKind::Choice(items) => {
                let nodes: Vec<Node> = items
                    .iter()
                    .map(|d| {
                        path.push(&d.name);
                        let n = d.freeze_at(path, mark);
                        path.pop();
                        n
                    })
                    .collect();
                let nodes: &'static [Node] = Box::leak(nodes.into_boxed_slice());
                if matches!(self.kind, DeclKind::Seq(_)) { Kind::Seq(nodes) } else { Kind::Choice(nodes) }
            }
        };
        Node { name, min: self.min, max: self.max, kind, field, subject }
    }

    /// The element at `path` below this one.
    pub fn find(&self, path: &[&str]) -> Option<&Decl> {
        let Some((first, rest)) = path.split_first() else { return Some(self) };
        match &self.kind {
            DeclKind::Seq(items) | DeclKind::Choice(items) => items.iter().find(|d| d.name == *first)?.find(rest),
            DeclKind::Text(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const XSD: &str = r#"<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:t="urn:t" targetNamespace="urn:t" elementFormDefault="qualified">
  <xs:annotation><xs:documentation>A <b>test</b> layout.</xs:documentation></xs:annotation>
  <xs:simpleType name="Code"><xs:restriction base="xs:string"><xs:pattern value="[A-Z]{2}-\d{3}"/></xs:restriction></xs:simpleType>
  <xs:simpleType name="Colour"><xs:restriction base="xs:token"><xs:enumeration value="red"/><xs:enumeration value="blue"/></xs:restriction></xs:simpleType>
  <xs:complexType name="Item"><xs:sequence>
    <xs:element name="Code" type="t:Code"/>
    <xs:element name="Colour" type="t:Colour" minOccurs="0"/>
    <xs:element name="Count" minOccurs="0"><xs:simpleType><xs:restriction base="xs:integer"><xs:minInclusive value="1"/><xs:maxInclusive value="9"/></xs:restriction></xs:simpleType></xs:element>
  </xs:sequence></xs:complexType>
  <xs:element name="Answer"><xs:complexType><xs:sequence>
    <xs:element name="Item" type="t:Item" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>"#;

    #[test]
    fn the_subset_compiles_into_the_shape() {
        let s = compile(XSD).unwrap();
        assert_eq!(s.target_ns, "urn:t");
        let a = &s.elements["Answer"];
        let item = a.find(&["Item"]).unwrap();
        assert_eq!(item.max, UNBOUNDED);
        let DeclKind::Text(code) = &item.find(&["Code"]).unwrap().kind else { panic!() };
        assert!(code.check("AB-123").is_ok());
        assert!(code.check("AB-1234").is_err());
        let DeclKind::Text(count) = &item.find(&["Count"]).unwrap().kind else { panic!() };
        assert!(count.check("9").is_ok());
        assert!(count.check("10").unwrap_err().contains("at most 9"));
    }

    #[test]
    fn constructs_outside_the_subset_are_named() {
        let cases = [
            (
                XSD.replace("<xs:sequence>\n    <xs:element name=\"Item\"", "<xs:all>\n    <xs:element name=\"Item\"")
                    .replace("</xs:sequence></xs:complexType></xs:element>", "</xs:all></xs:complexType></xs:element>"),
                "xs:all at",
            ),
            (XSD.replace(r#"<xs:element name="Code" type="t:Code"/>"#, r#"<xs:any/>"#), "xs:any at"),
            (XSD.replace(r#"elementFormDefault="qualified""#, ""), "elementFormDefault"),
            (XSD.replace(r#"type="t:Code""#, r#"type="xs:duration""#), "xs:duration is outside"),
            (XSD.replace(r#"minOccurs="0"/>"#, r#"minOccurs="0" nillable="true"/>"#), "attribute nillable"),
            (XSD.replace("</xs:schema>", "<xs:import namespace=\"urn:x\"/></xs:schema>"), "xs:import at /xs:schema"),
            (
                XSD.replace(r#"<xs:element name="Code" type="t:Code"/>"#, r#"<xs:element name="Sub" type="t:Item"/>"#),
                "recursion",
            ),
            (
                XSD.replace("<xs:complexType name=\"Item\">", "<xs:complexType name=\"Item\" mixed=\"true\">"),
                "attribute mixed",
            ),
            (
                XSD.replace("<!DOCTYPE", "").replace("<?xml version=\"1.0\"?>", "<?xml version=\"1.0\"?><!DOCTYPE x>"),
                "DOCTYPE",
            ),
        ];
        for (xsd, want) in cases {
            let e = compile(&xsd).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
