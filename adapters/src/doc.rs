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
use std::fmt;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Number, Value};

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

/// Reads JSON text; refuses trailing characters, nesting deeper than 128 (serde_json's limit)
/// and an object that repeats a key (a data error: `is_data()`).
pub fn parse(text: &str) -> Result<Doc<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let doc = Seed.deserialize(&mut de)?;
    de.end()?;
    Ok(doc)
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

/// Builds a [`Doc`] from serde_json's reader, borrowing what it lends.
struct Seed;

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Doc<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Doc<'de>, D::Error> {
        d.deserialize_any(Seed)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Doc<'de>, E> {
        // As `Value` does: JSON text cannot spell a non-finite number.
        Ok(Number::from_f64(n).map_or(Doc::Null, Doc::Number))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(Seed)? {
            out.push(v);
        }
        Ok(Doc::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut out: Vec<(Cow<'de, str>, Doc<'de>)> = Vec::new();
        while let Some(k) = map.next_key_seed(Key)? {
            // A small object is searched as it fills; a large one is sorted once at the end,
            // so that a source cannot make this quadratic.
            if out.len() < SCANNED_KEYS && out.iter().any(|(seen, _)| *seen == k) {
                return Err(de::Error::custom("an object repeats a key"));
            }
            let v = map.next_value_seed(Seed)?;
            out.push((k, v));
        }
        if out.len() > SCANNED_KEYS {
            let mut keys: Vec<&str> = out.iter().map(|(k, _)| k.as_ref()).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(de::Error::custom("an object repeats a key"));
            }
        }
        Ok(Doc::Object(out))
    }
}

/// Objects up to this many members are checked for a repeated key as they are read.
const SCANNED_KEYS: usize = 16;

/// A member's key, borrowed where the text holds it without escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(Key)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
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
            assert_eq!(Doc::from_value(&value).to_value(), value);
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
