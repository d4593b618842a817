//! A source's JSON answer, read in place: the representation the layout checks, minimises and
//! writes out again.
//!
//! A `serde_json::Value` copies every string and key of an answer into its own allocation and
//! every object into a B-tree. The answer's text outlives its check, so [`Doc`] borrows its
//! strings and keys from it (only a string with escapes is copied, unescaped) and keeps an
//! object's members in a vector, in the source's order. jsonschema validates it through its
//! custom-representation interface ([`DocJson`]), and minimisation removes members in place.
//!
//! An object that repeats a key is refused at parsing: the layout would check one of the
//! values and the reader of the answer might take the other.

use std::borrow::Cow;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

use crate::json_text;

/// One JSON value of an answer; strings and keys borrowed from its text where they can be.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Doc<'a> {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Doc<'a>>),
    /// Members in the order the source wrote them; no key twice.
    Object(Vec<(Cow<'a, str>, Doc<'a>)>),
}

/// Why a text is not an answer [`parse`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or nested deeper than serde_json allows.
    #[error("not JSON")]
    Syntax,
    /// JSON, but an object repeats a key.
    #[error("an object repeats a key")]
    RepeatedKey,
}

impl ParseError {
    /// Whether the text is JSON that breaks a rule of its content (a repeated key), as
    /// `serde_json::Error::is_data`.
    pub fn is_data(self) -> bool {
        self == ParseError::RepeatedKey
    }
}

/// Reads JSON text as `serde_json::from_str::<Value>` reads it (the same texts are accepted,
/// with the same values, nesting limit included), but in place, and refusing an object that
/// repeats a key. It stops at the first repeated key, so a text that also breaks the syntax
/// further on is refused as [`ParseError::RepeatedKey`].
///
/// The reader is this module's own: serde_json's deserializer reaches a `Doc` through the
/// generic `Visitor` interface, which cost the data plane 13.0 thousand instructions per call
/// for the association answer, against 10.2 for this reader (`load-tests/instructions.py`).
/// The two parts where JSON is subtle are still serde_json's: a string with an escape is
/// unescaped by serde_json, and a number other than a plain integer of at most 18 digits is
/// read by it. A differential test and the `json_layout` fuzz target hold the two readers
/// equal.
pub fn parse(text: &str) -> Result<Doc<'_>, ParseError> {
    let mut r = Reader { text, pos: 0, members: Vec::with_capacity(32), items: Vec::with_capacity(16) };
    let doc = r.value(0)?;
    r.skip_ws();
    if r.pos != text.len() {
        return Err(ParseError::Syntax);
    }
    Ok(doc)
}

/// serde_json's nesting limit: an array or object opened this deep is refused.
const MAX_DEPTH: usize = 128;

/// The reader's state. The members of the objects being read are stacked in `members` (the
/// elements of arrays in `items`) and moved into a vector of their exact size when the object
/// ends: one allocation per object, where pushing into a vector of its own grows it two or
/// three times.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
    members: Vec<(Cow<'a, str>, Doc<'a>)>,
    items: Vec<Doc<'a>>,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// Skips white space, then takes `b` if it comes next.
    fn eat(&mut self, b: u8) -> bool {
        self.skip_ws();
        let next = self.peek() == Some(b);
        self.pos += usize::from(next);
        next
    }

    /// A value, its first byte not yet read; `depth` arrays and objects are open around it.
    fn value(&mut self, depth: usize) -> Result<Doc<'a>, ParseError> {
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Doc::String(self.string()?)),
            Some(b't') => self.literal("true", Doc::Bool(true)),
            Some(b'f') => self.literal("false", Doc::Bool(false)),
            Some(b'n') => self.literal("null", Doc::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(ParseError::Syntax),
        }
    }

    fn literal(&mut self, word: &str, doc: Doc<'a>) -> Result<Doc<'a>, ParseError> {
        if !self.text[self.pos..].starts_with(word) {
            return Err(ParseError::Syntax);
        }
        self.pos += word.len();
        Ok(doc)
    }

    fn object(&mut self, depth: usize) -> Result<Doc<'a>, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(ParseError::Syntax);
        }
        self.pos += 1;
        if self.eat(b'}') {
            return Ok(Doc::Object(Vec::new()));
        }
        let start = self.members.len();
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(ParseError::Syntax);
            }
            let key = self.string()?;
            // A small object is searched as it fills; a large one is sorted once at the end,
            // so that a source cannot make this quadratic.
            let seen = &self.members[start..];
            if seen.len() < SCANNED_KEYS && seen.iter().any(|(k, _)| *k == key) {
                return Err(ParseError::RepeatedKey);
            }
            if !self.eat(b':') {
                return Err(ParseError::Syntax);
            }
            let value = self.value(depth)?;
            self.members.push((key, value));
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                break;
            }
            return Err(ParseError::Syntax);
        }
        // `split_off` moves the tail into a vector of exactly its length.
        let out = self.members.split_off(start);
        if out.len() > SCANNED_KEYS {
            let mut keys: Vec<&str> = out.iter().map(|(k, _)| k.as_ref()).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(ParseError::RepeatedKey);
            }
        }
        Ok(Doc::Object(out))
    }

    fn array(&mut self, depth: usize) -> Result<Doc<'a>, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(ParseError::Syntax);
        }
        self.pos += 1;
        if self.eat(b']') {
            return Ok(Doc::Array(Vec::new()));
        }
        let start = self.items.len();
        loop {
            let item = self.value(depth)?;
            self.items.push(item);
            if self.eat(b',') {
                continue;
            }
            if self.eat(b']') {
                break;
            }
            return Err(ParseError::Syntax);
        }
        Ok(Doc::Array(self.items.split_off(start)))
    }

    /// A string, at its opening quote: borrowed from the text when it has no escape.
    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let start = self.pos + 1;
        let i = json_text::special(self.text.as_bytes(), start);
        match self.text.as_bytes().get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                // Both ends are ASCII quotes, so char boundaries.
                Ok(Cow::Borrowed(&self.text[start..i]))
            }
            Some(b'\\') => self.escaped(i),
            _ => Err(ParseError::Syntax),
        }
    }

    /// The rest of a string that holds an escape at `at`: its end is found here, and
    /// serde_json unescapes it (surrogate pairs, invalid escapes and all).
    fn escaped(&mut self, mut at: usize) -> Result<Cow<'a, str>, ParseError> {
        let bytes = self.text.as_bytes();
        loop {
            match bytes.get(at) {
                // The byte after a backslash is escaped (if it begins a longer character, the
                // rest of it is no quote or backslash either).
                Some(b'\\') => at += 2,
                Some(b'"') => break,
                Some(_) => at += 1,
                None => return Err(ParseError::Syntax),
            }
        }
        let quoted = &self.text[self.pos..=at];
        self.pos = at + 1;
        serde_json::from_str::<String>(quoted).map(Cow::Owned).map_err(|_| ParseError::Syntax)
    }

    fn number(&mut self) -> Result<Doc<'a>, ParseError> {
        let (end, n, _) = number_at(self.text, self.pos).ok_or(ParseError::Syntax)?;
        self.pos = end;
        Ok(Doc::Number(n))
    }
}

/// The JSON number that begins at `start` of `text` (at its `-` or first digit): where it
/// ends, its value, and whether it is a plain integer (no fraction or exponent, at most 18
/// digits, not `-0`). `None`: no number begins there, or serde_json refuses it.
pub(crate) fn number_at(text: &str, start: usize) -> Option<(usize, Number, bool)> {
    let bytes = text.as_bytes();
    let digits = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let negative = bytes.get(start) == Some(&b'-');
    let int_start = start + usize::from(negative);
    let mut end = match bytes.get(int_start)? {
        b'0' => int_start + 1,
        b'1'..=b'9' => digits(int_start + 1),
        _ => return None,
    };
    let int_end = end;
    if bytes.get(end) == Some(&b'.') {
        let after = digits(end + 1);
        if after == end + 1 {
            return None;
        }
        end = after;
    }
    if let Some(b'e' | b'E') = bytes.get(end) {
        let mut i = end + 1;
        if let Some(b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        let after = digits(i);
        if after == i {
            return None;
        }
        end = after;
    }
    // A plain integer of up to 18 digits fits an i64 whatever its sign; serde_json reads
    // `-0` as a float, so a negative zero goes to it with every other number.
    let plain = &bytes[int_start..int_end];
    if end == int_end && plain.len() <= 18 && !(negative && plain == b"0") {
        let n = plain.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
        return Some((end, if negative { -n } else { n }.into(), true));
    }
    serde_json::from_str::<Number>(&text[start..end]).ok().map(|n| (end, n, false))
}

impl<'a> Doc<'a> {
    /// A view of a `serde_json::Value`, borrowing its strings (tests, and callers that hold a
    /// `Value` already).
    pub fn from_value(v: &'a Value) -> Self {
        match v {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(*b),
            Value::Number(n) => Doc::Number(n.clone()),
            Value::String(s) => Doc::String(Cow::Borrowed(s)),
            Value::Array(items) => Doc::Array(items.iter().map(Doc::from_value).collect()),
            Value::Object(map) => {
                Doc::Object(map.iter().map(|(k, v)| (Cow::Borrowed(k.as_str()), Doc::from_value(v))).collect())
            }
        }
    }

    /// The same value as a `serde_json::Value` (cold paths: error reports, tests).
    pub fn to_value(&self) -> Value {
        match self {
            Doc::Null => Value::Null,
            Doc::Bool(b) => Value::Bool(*b),
            Doc::Number(n) => Value::Number(n.clone()),
            Doc::String(s) => Value::String(s.to_string()),
            Doc::Array(items) => Value::Array(items.iter().map(Doc::to_value).collect()),
            Doc::Object(members) => Value::Object(members.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()),
        }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Doc<'a>> {
        match self {
            Doc::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Removes the member `key` of an object, if it has one.
    pub fn remove(&mut self, key: &str) {
        if let Doc::Object(members) = self {
            members.retain(|(k, _)| k != key);
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Doc::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Objects up to this many members are checked for a repeated key as they are read.
const SCANNED_KEYS: usize = 16;

impl Doc<'_> {
    /// Appends the value's JSON text to `out`: the bytes `serde_json::to_writer` writes for
    /// it, without its serializer (see [`crate::json_text`]).
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Doc::Null => out.extend_from_slice(b"null"),
            Doc::Bool(true) => out.extend_from_slice(b"true"),
            Doc::Bool(false) => out.extend_from_slice(b"false"),
            Doc::Number(n) => json_text::push_number(out, n),
            Doc::String(s) => json_text::push_str(out, s),
            Doc::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Doc::Object(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_text::push_str(out, k);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

impl Serialize for Doc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Doc::Null => s.serialize_unit(),
            Doc::Bool(b) => s.serialize_bool(*b),
            Doc::Number(n) => n.serialize(s),
            Doc::String(v) => s.serialize_str(v),
            Doc::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Doc::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

/// jsonschema's view of a [`Doc`]: instances are `&Doc`, schemas stay `serde_json::Value`.
#[derive(Debug)]
pub struct DocJson;

impl Json for DocJson {
    type Node<'a> = &'a Doc<'a>;
    type PreparedKey = String;
    type StringBuffer = Doc<'static>;

    // A lookup scans the members, so one pass over them pays off against even a few lookups.
    const KEYS_PER_LOOKUP: usize = 16;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(buffer: &mut Doc<'static>, string: &str, f: impl FnOnce(Self::Node<'_>) -> T) -> T {
        // The buffer's string is reused from one property name to the next.
        match buffer {
            Doc::String(Cow::Owned(s)) => {
                s.clear();
                s.push_str(string);
            }
            _ => *buffer = Doc::String(Cow::Owned(string.to_owned())),
        }
        f(buffer)
    }
}

impl<'a> Node<'a, DocJson> for &'a Doc<'a> {
    type Object = &'a [(Cow<'a, str>, Doc<'a>)];
    type Array = &'a [Doc<'a>];
    type Number = &'a Number;

    fn as_object(&self) -> Option<Self::Object> {
        match self {
            Doc::Object(members) => Some(members),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<Self::Array> {
        match self {
            Doc::Array(items) => Some(items),
            _ => None,
        }
    }
    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self {
            Doc::String(s) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }
    fn as_number(&self) -> Option<&'a Number> {
        match self {
            Doc::Number(n) => Some(n),
            _ => None,
        }
    }
    fn as_boolean(&self) -> Option<bool> {
        match self {
            Doc::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Doc::Null)
    }
    fn json_type(&self) -> JsonType {
        match self {
            Doc::Null => JsonType::Null,
            Doc::Bool(_) => JsonType::Boolean,
            Doc::Number(_) => JsonType::Number,
            Doc::String(_) => JsonType::String,
            Doc::Array(_) => JsonType::Array,
            Doc::Object(_) => JsonType::Object,
        }
    }
    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` and `const` on strings, the common case, without building a `Value`.
        match (self, expected) {
            (Doc::String(s), Value::String(e)) => s == e,
            (Doc::String(_), _) => false,
            (Doc::Bool(b), Value::Bool(e)) => b == e,
            (Doc::Null, Value::Null) => true,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }
    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Doc::to_value(self))
    }
    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(std::ptr::from_ref::<Doc<'a>>(*self) as usize))
    }
}

/// The members of an object, keys as `&str`.
#[derive(Debug)]
pub struct Members<'a>(std::slice::Iter<'a, (Cow<'a, str>, Doc<'a>)>);

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a Doc<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k.as_ref(), v))
    }
}

impl<'a> Object<'a, DocJson> for &'a [(Cow<'a, str>, Doc<'a>)] {
    type Node = &'a Doc<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn get(&self, key: &String) -> Option<&'a Doc<'a>> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn members(&self) -> Members<'a> {
        Members(self.iter())
    }
}

impl<'a> Array<'a, DocJson> for &'a [Doc<'a>] {
    type Node = &'a Doc<'a>;
    type ElementsIter = std::slice::Iter<'a, Doc<'a>>;

    fn len(&self) -> usize {
        <[_]>::len(self)
    }
    fn elements(&self) -> Self::ElementsIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_what_serde_json_reads_and_writes_it_back() {
        for text in [
            r#"{"a":1,"b":[true,null,-2,3.5,"x\u00e9\"q"],"c":{"d":{}},"e":18446744073709551615,"f":-9223372036854775808}"#,
            "[]",
            "\"s\"",
            " 12 ",
            r#"{"k\u0041":"v"}"#,
        ] {
            let doc = parse(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(doc.to_value(), value, "{text}");
            let written = serde_json::to_string(&doc).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), value, "{text}");
            let mut direct = Vec::new();
            doc.write(&mut direct);
            assert_eq!(String::from_utf8(direct).unwrap(), written, "{text}");
            assert_eq!(Doc::from_value(&value).to_value(), value);
        }
    }

    /// What serde_json makes of `text`, against this reader: the same value, or both refuse.
    /// This reader also refuses JSON for a repeated key, which serde_json lets through, and
    /// stops at the first such key, before any syntax error further on.
    fn agrees_with_serde_json(text: &str) -> Result<(), String> {
        let reference = serde_json::from_str::<Value>(text);
        match (parse(text), reference) {
            (Ok(doc), Ok(value)) if doc.to_value() == value => Ok(()),
            (Err(ParseError::Syntax), Err(_)) | (Err(ParseError::RepeatedKey), _) => Ok(()),
            (ours, theirs) => Err(format!("{text:?}: this reader {ours:?}, serde_json {theirs:?}")),
        }
    }

    #[test]
    fn reads_exactly_what_serde_json_reads() {
        let deep = |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        let mut texts: Vec<String> = [
            // numbers
            "0",
            "-0",
            "-0.0",
            "0.0",
            "7",
            "-7",
            "1e5",
            "1E+5",
            "1e-5",
            "2.5e3",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1e999",
            "-1e999",
            "1e-999",
            "01",
            "-01",
            "00",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "1e+",
            "1.e5",
            "0x1",
            "1_0",
            // strings
            r#""""#,
            r#""plain""#,
            r#""\u00e9""#,
            r#""\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ude00x""#,
            r#""\x""#,
            r#""a\"b""#,
            r#""\\""#,
            r#""\/""#,
            "\"a\tb\"",
            "\"a\u{1f}b\"",
            "\"\u{7f}é中😀\"",
            r#""abc"#,
            r#""a\"#,
            r#""\u12""#,
            r#""\uZZZZ""#,
            r#""\u0000""#,
            // literals
            "true",
            "false",
            "null",
            "tru",
            "nul",
            "nullx",
            "null null",
            "True",
            "NaN",
            "Infinity",
            // structure
            "[]",
            "{}",
            "[1,]",
            r#"{"a":1,}"#,
            "{,}",
            "[,1]",
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            "{1:2}",
            " [ 1 , 2 ] ",
            "\t\n\r[]\r\n",
            "[]]",
            "[",
            "{",
            "",
            " ",
            "[1 2]",
            r#"{"a":1 "b":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"[{"x":{"y":[true,false,null,"s",-1.5e-3]}}]"#,
            "\u{feff}[]",
            "[1]\u{0}",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for n in [126, 127, 128, 129] {
            texts.push(deep("[", "]", n));
            texts.push(deep(r#"{"k":"#, "}", n));
            texts.push(deep(r#"[{"k":"#, "}]", n / 2));
        }
        for text in &texts {
            agrees_with_serde_json(text).unwrap();
        }
    }

    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[a-z\"\\\\\n]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(("[a-c\"\\\\]{0,3}", inner), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// JSON texts, compact and pretty, read back to the value they were written from.
        #[test]
        fn reads_what_serde_json_writes(v in json_value()) {
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                prop_assert_eq!(parse(&text).map(|d| d.to_value()), Ok(v.clone()));
            }
        }

        /// A character removed, replaced or added anywhere: both readers still agree.
        #[test]
        fn agrees_with_serde_json_on_damaged_texts(
            v in json_value(),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            c in prop_oneof![Just('"'), Just('\\'), Just(','), Just(':'), Just('['), Just('}'), Just('-'),
                             Just('0'), Just('e'), Just('.'), Just(' '), Just('\u{1}'), any::<char>()],
        ) {
            let mut chars: Vec<char> = serde_json::to_string(&v).unwrap().chars().collect();
            let i = at.index(chars.len() + 1);
            match edit {
                0 if i < chars.len() => { chars.remove(i); }
                1 if i < chars.len() => chars[i] = c,
                _ => chars.insert(i, c),
            }
            let text: String = chars.into_iter().collect();
            prop_assert!(agrees_with_serde_json(&text).is_ok(), "{}", agrees_with_serde_json(&text).unwrap_err());
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let text = r#"{"plain":"abc","esc":"a\nb"}"#;
        let Doc::Object(members) = parse(text).unwrap() else { panic!() };
        assert!(matches!(members[0], (Cow::Borrowed("plain"), Doc::String(Cow::Borrowed("abc")))));
        assert!(matches!(&members[1].1, Doc::String(Cow::Owned(s)) if s == "a\nb"));
    }

    #[test]
    fn refuses_repeated_keys_small_and_large_objects_alike_and_what_is_not_json() {
        let large: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
        for text in [r#"{"a":1,"a":2}"#.to_owned(), format!("{{{large}\"k7\":0}}"), r#"{"x":[{"k":1,"k":1}]}"#.into()] {
            let e = parse(&text).unwrap_err();
            assert!(e.is_data() && e.to_string().contains("repeats a key"), "{text}: {e}");
        }
        assert!(parse(&format!("{{{large}\"last\":0}}")).is_ok());
        for text in ["{\"a\":1} x", "1e999", "{", &"[".repeat(200), ""] {
            assert!(!parse(text).unwrap_err().is_data(), "{text}");
        }
    }

    #[test]
    fn jsonschema_reads_a_doc_as_it_reads_a_value() {
        let schema = serde_json::json!({
            "type": "object", "required": ["id", "n"], "additionalProperties": false,
            "properties": {
                "id": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "n": {"type": "integer", "minimum": 0},
                "kind": {"enum": ["a", "b", 3]},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                "more": {"type": "object", "propertyNames": {"pattern": "^x"}}
            }
        });
        let ours = jsonschema::options_for::<DocJson>().build(&schema).unwrap();
        let reference = jsonschema::validator_for(&schema).unwrap();
        for text in [
            r#"{"id":"abc","n":1}"#,
            r#"{"id":"abc","n":1,"kind":"b","tags":["p","q"],"more":{"xa":1}}"#,
            r#"{"id":"abc","n":1,"kind":3}"#,
            r#"{"id":"abcdef","n":1}"#,
            r#"{"id":"ABC","n":1}"#,
            r#"{"id":"abc","n":-1}"#,
            r#"{"id":"abc","n":1.5}"#,
            r#"{"id":"abc"}"#,
            r#"{"id":"abc","n":1,"kind":"c"}"#,
            r#"{"id":"abc","n":1,"tags":["p","p"]}"#,
            r#"{"id":"abc","n":1,"more":{"y":1}}"#,
            r#"{"id":"abc","n":1,"extra":true}"#,
            r#"[1]"#,
        ] {
            let doc = parse(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours.is_valid(&doc), reference.is_valid(&value), "{text}");
            assert_eq!(
                ours.iter_errors(&doc).map(|e| e.instance_path().as_str().to_owned()).collect::<Vec<_>>(),
                reference.iter_errors(&value).map(|e| e.instance_path().as_str().to_owned()).collect::<Vec<_>>(),
                "{text}"
            );
        }
    }
}
