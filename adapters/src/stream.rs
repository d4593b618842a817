//! A JSON answer checked and minimised in one pass over its text, without a document tree.
//!
//! [`crate::doc`] reads an answer into a tree, jsonschema checks the tree, minimisation removes
//! the members no grant reaches and the tree is written out again: four passes, an allocation
//! per object, and about a third of the data plane's instructions per call for the association
//! answer (`load-tests/instructions.py`). Most published layouts use a small part of JSON Schema
//! (types, properties, required, closed objects, items, lengths, simple anchored patterns,
//! string enums, `oneOf` between different types, `$ref` into `$defs`). For those, a [`Plan`] is
//! compiled from the schema, and [`Plan::run`] reads the answer once: it checks each value
//! against its schema node and each identifier against its check algorithm as it passes, and
//! writes what the granted paths keep straight into the output, with the subjects that leave.
//!
//! The pass answers only when it is sure the answer is valid: anything it does not handle
//! itself (a string or key with an escape, a key the schema does not name, a number that is
//! not a plain integer where only integers are allowed, a value that breaks a rule, a pattern
//! that does not match) ends it with `None`, and the caller takes the tree path, which decides
//! and names the rule broken. So an answer it accepts is one the tree path accepts, and the
//! bytes and subjects it gives are those the tree path gives; the unit tests and the
//! `json_layout` fuzz target hold the two equal.

use serde_json::Value;

use crate::{doc, json_text};

/// A JSON type, as a bit: a schema node allows a set of them.
type Types = u8;
const NULL: Types = 1;
const BOOL: Types = 2;
/// A number written as a plain integer.
const INT: Types = 4;
/// Any other number (a fraction or an exponent): "number", and maybe "integer" (1.0), which
/// the pass leaves to the tree path.
const NUM: Types = 8;
const STRING: Types = 16;
const ARRAY: Types = 32;
const OBJECT: Types = 64;
const ANY: Types = 127;

/// serde_json's nesting limit, as [`crate::doc::parse`] applies it.
const MAX_DEPTH: usize = 128;
/// Steps a pattern match may take before the pass gives up on it.
const PATTERN_BUDGET: usize = 4096;

/// Which of a layout's paths something concerns, one mask per kind: kept, subjects,
/// identifiers (bit `i`: path `i` of that kind).
type Masks = [u64; 3];

/// One schema node, the keywords the pass handles, and the paths at its place in the answer.
/// A node stands at one place (a `$ref` is copied into each place it is used), so which paths
/// end there, and which go on into its elements or into each of its properties, is worked
/// out once: the pass narrows its paths with a mask per step instead of comparing segments.
#[derive(Debug, Clone)]
struct Node {
    /// The paths that end here.
    ends: Masks,
    /// The paths that go on into this node's elements, should it be an array.
    star: Masks,
    types: Types,
    enum_strings: Option<Vec<String>>,
    min_length: usize,
    max_length: usize,
    pattern: Option<Pattern>,
    minimum: Option<i64>,
    items: Option<Box<Node>>,
    min_items: usize,
    max_items: usize,
    /// Each property, the paths that go on into it, its node.
    properties: Vec<(String, Masks, Node)>,
    /// Bit `i`: `properties[i]`'s name holds no byte a JSON string escapes, so a key is that
    /// name exactly when the text at the key is the name and a quote.
    plain_names: u64,
    /// Bit `i`: `properties[i]` is required.
    required: u64,
    /// `additionalProperties: false`.
    closed: bool,
    /// Branches of `oneOf`, each allowing types no other one does: the value's type picks
    /// the one branch it can match.
    one_of: Vec<Node>,
}

/// A node with no rule, where no path goes.
static UNRULED: Node = Node::unruled();

impl Node {
    const fn unruled() -> Self {
        Node {
            ends: [0; 3],
            star: [0; 3],
            types: ANY,
            enum_strings: None,
            min_length: 0,
            max_length: usize::MAX,
            pattern: None,
            minimum: None,
            items: None,
            min_items: 0,
            max_items: usize::MAX,
            properties: Vec::new(),
            plain_names: 0,
            required: 0,
            closed: false,
            one_of: Vec::new(),
        }
    }
}

/// Keywords that carry no rule.
const ANNOTATIONS: &[&str] = &["$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples"];

/// The mask of every path of `paths` (at most 64).
fn every(paths: &[Vec<&'static str>]) -> u64 {
    if paths.len() >= 64 { u64::MAX } else { (1u64 << paths.len()) - 1 }
}

/// The masks of `paths` whose segment at `at` is `seg`, of those that end at `at`.
fn masks_of(paths: &Paths<'_>, at: usize, seg: Option<&str>) -> Masks {
    let m = |p: &[Vec<&'static str>]| match seg {
        Some(seg) => narrow(p, at, every(p), seg),
        None => ending(p, at, every(p)),
    };
    [m(paths.kept), m(paths.subjects), m(paths.identifiers)]
}

/// Compiles the schema node that stands at path depth `at`; `None` where it uses anything the
/// pass does not handle. `depth` counts the nodes and references followed to get here.
fn compile(schema: &Value, root: &Value, depth: usize, at: usize, paths: &Paths<'_>) -> Option<Node> {
    if depth > 32 {
        return None;
    }
    let map = schema.as_object()?;
    if let Some(r) = map.get("$ref") {
        // A reference with rules beside it is left to the tree path.
        if map.keys().any(|k| k != "$ref" && !ANNOTATIONS.contains(&k.as_str())) {
            return None;
        }
        let name = r.as_str()?.strip_prefix("#/$defs/")?;
        if name.contains(['/', '~']) {
            return None;
        }
        return compile(root.get("$defs")?.get(name)?, root, depth + 1, at, paths);
    }
    let mut n = Node::unruled();
    n.ends = masks_of(paths, at, None);
    n.star = masks_of(paths, at, Some("*"));
    let count = |v: &Value| v.as_u64().and_then(|u| usize::try_from(u).ok());
    for (key, v) in map {
        match key.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let one = |t: &Value| match t.as_str()? {
                    "null" => Some(NULL),
                    "boolean" => Some(BOOL),
                    "integer" => Some(INT),
                    "number" => Some(INT | NUM),
                    "string" => Some(STRING),
                    "array" => Some(ARRAY),
                    "object" => Some(OBJECT),
                    _ => None,
                };
                n.types = match v {
                    Value::Array(ts) => ts.iter().try_fold(0, |m, t| one(t).map(|b| m | b))?,
                    t => one(t)?,
                };
            }
            "enum" => {
                n.enum_strings =
                    Some(v.as_array()?.iter().map(|s| s.as_str().map(str::to_owned)).collect::<Option<_>>()?)
            }
            "minLength" => n.min_length = count(v)?,
            "maxLength" => n.max_length = count(v)?,
            "pattern" => n.pattern = Some(Pattern::compile(v.as_str()?)?),
            "minimum" => n.minimum = Some(v.as_i64()?),
            "items" => n.items = Some(Box::new(compile(v, root, depth + 1, at + 1, paths)?)),
            "minItems" => n.min_items = count(v)?,
            "maxItems" => n.max_items = count(v)?,
            "properties" => {
                for (name, s) in v.as_object()? {
                    let node = compile(s, root, depth + 1, at + 1, paths)?;
                    n.properties.push((name.clone(), masks_of(paths, at, Some(name)), node));
                }
            }
            "required" | "additionalProperties" | "oneOf" => {}
            _ => return None,
        }
    }
    if n.properties.len() > 64 {
        return None;
    }
    for (i, (name, _, _)) in n.properties.iter().enumerate() {
        if json_text::special(name.as_bytes(), 0) == name.len() {
            n.plain_names |= 1 << i;
        }
    }
    if let Some(req) = map.get("required") {
        for name in req.as_array()? {
            let i = n.properties.iter().position(|(p, _, _)| Some(p.as_str()) == name.as_str())?;
            n.required |= 1 << i;
        }
    }
    match map.get("additionalProperties") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => n.closed = true,
        Some(_) => return None,
    }
    if let Some(branches) = map.get("oneOf") {
        // Alone in its node, between branches of different types.
        if map.keys().any(|k| k != "oneOf" && !ANNOTATIONS.contains(&k.as_str())) {
            return None;
        }
        let mut seen = 0;
        for b in branches.as_array()? {
            let b = compile(b, root, depth + 1, at, paths)?;
            if b.types == ANY || b.types & seen != 0 {
                return None;
            }
            seen |= b.types;
            n.one_of.push(b);
        }
    }
    if n.items.is_none() && n.star != [0; 3] {
        // Elements without rules that paths go into: a node for them, to carry the paths.
        n.items = Some(Box::new(compile(&Value::Object(serde_json::Map::new()), root, depth + 1, at + 1, paths)?));
    }
    Some(n)
}

/// An anchored pattern of single characters and classes, each with a count: the shape of
/// the layouts' patterns (`^V[0-9]{7}$`, `^[^@\s]+@[^@\s]+$`). Its matcher errs only towards
/// "no match" (a non-ASCII character against a negated class, a match that takes too long),
/// which sends the answer to the tree path.
#[derive(Debug, Clone)]
struct Pattern {
    atoms: Vec<(Atom, usize, usize)>,
    /// Ends with `$`: the whole string must match, not only its start.
    whole: bool,
    /// Every atom's count is fixed (`^V[0-9]{7}$`): the characters it takes, matched in
    /// one go without backtracking.
    fixed: Option<usize>,
}

#[derive(Debug, Clone)]
enum Atom {
    Char(char),
    /// `ascii`: bit `c` is whether the ASCII character `c` matches, negation included;
    /// `ranges`: the class's ranges, for the characters beyond ASCII; `negated`: `[^...]`.
    Class {
        ascii: u128,
        ranges: Vec<(char, char)>,
        negated: bool,
    },
}

impl Atom {
    /// A class of `ranges` (and `\s` when `space`), negated or not.
    fn class(ranges: Vec<(char, char)>, space: bool, negated: bool) -> Atom {
        let mut ascii = 0u128;
        for c in (0..128u8).map(char::from) {
            let inside = ranges.iter().any(|(a, b)| (*a..=*b).contains(&c))
                || (space && matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
            ascii |= u128::from(inside != negated) << u32::from(c);
        }
        Atom::Class { ascii, ranges, negated }
    }

    fn matches(&self, c: char) -> bool {
        match self {
            Atom::Char(x) => *x == c,
            Atom::Class { ascii, ranges, negated } => {
                if c.is_ascii() {
                    return ascii >> u32::from(c) & 1 != 0;
                }
                // ECMAScript's `\s` holds characters beyond ASCII: a negated class does not
                // decide them here, and a class's `\s` does not match them.
                !*negated && ranges.iter().any(|(a, b)| (*a..=*b).contains(&c))
            }
        }
    }
}

impl Pattern {
    fn compile(p: &str) -> Option<Pattern> {
        let mut chars = p.strip_prefix('^')?.chars().peekable();
        let mut atoms = Vec::new();
        let mut whole = false;
        let literal = |c: char| (!c.is_ascii_alphanumeric()).then_some(c);
        while let Some(c) = chars.next() {
            let atom = match c {
                '$' if chars.peek().is_none() => {
                    whole = true;
                    break;
                }
                '\\' => Atom::Char(literal(chars.next()?)?),
                '[' => {
                    let negated = chars.next_if_eq(&'^').is_some();
                    let (mut ranges, mut space) = (Vec::new(), false);
                    loop {
                        let c = match chars.next()? {
                            ']' => break,
                            '\\' => match chars.next()? {
                                's' => {
                                    space = true;
                                    continue;
                                }
                                e => literal(e)?,
                            },
                            '[' => return None,
                            c => c,
                        };
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next()? {
                                ']' => {
                                    ranges.extend([(c, c), ('-', '-')]);
                                    break;
                                }
                                hi if hi != '\\' && hi != '[' && c <= hi => ranges.push((c, hi)),
                                _ => return None,
                            }
                        } else {
                            ranges.push((c, c));
                        }
                    }
                    Atom::class(ranges, space, negated)
                }
                '.' | '(' | ')' | '|' | '*' | '+' | '?' | '{' | '}' | '^' | '$' | ']' => return None,
                c => Atom::Char(c),
            };
            let (min, max) = match chars.peek() {
                Some('+') => (1, usize::MAX),
                Some('*') => (0, usize::MAX),
                Some('?') => (0, 1),
                Some('{') => {
                    chars.next();
                    let mut body = String::new();
                    loop {
                        match chars.next()? {
                            '}' => break,
                            c => body.push(c),
                        }
                    }
                    let (lo, hi) = match body.split_once(',') {
                        None => (body.parse().ok()?, body.parse().ok()?),
                        Some((lo, "")) => (lo.parse().ok()?, usize::MAX),
                        Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
                    };
                    if lo > hi || matches!(chars.peek(), Some('?' | '+')) {
                        return None;
                    }
                    atoms.push((atom, lo, hi));
                    continue;
                }
                _ => (1, 1),
            };
            if max != 1 || min != 1 {
                chars.next();
                if matches!(chars.peek(), Some('?' | '+')) {
                    return None;
                }
            }
            atoms.push((atom, min, max));
        }
        let fixed = atoms.iter().all(|(_, min, max)| min == max).then(|| atoms.iter().map(|(_, n, _)| n).sum());
        Some(Pattern { atoms, whole, fixed })
    }

    fn is_match(&self, s: &str) -> bool {
        if let Some(n) = self.fixed
            && s.is_ascii()
        {
            let b = s.as_bytes();
            if b.len() < n || self.whole && b.len() != n {
                return false;
            }
            let mut at = 0;
            return self.atoms.iter().all(|(atom, count, _)| {
                let ok = b[at..at + count].iter().all(|c| atom.matches(char::from(*c)));
                at += count;
                ok
            });
        }
        let mut budget = PATTERN_BUDGET;
        if s.is_ascii() {
            // Most strings (identifiers, dates, codes): a character is a byte.
            return self.from(0, s.as_bytes(), &mut budget);
        }
        let chars: Vec<char> = s.chars().collect();
        self.from(0, &chars, &mut budget)
    }

    /// Whether `atoms[a..]` match from the start of `rest` (to its end, if `whole`):
    /// greedy, backtracking within the budget.
    fn from<C: Copy + Into<char>>(&self, a: usize, rest: &[C], budget: &mut usize) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let Some((atom, min, max)) = self.atoms.get(a) else { return !self.whole || rest.is_empty() };
        let most = rest.iter().take(*max).take_while(|c| atom.matches((**c).into())).count();
        (*min..=most).rev().any(|n| self.from(a + 1, &rest[n..], budget))
    }
}

/// A layout's schema and paths, ready for the one-pass check.
#[derive(Debug, Clone)]
pub struct Plan {
    root: Node,
    /// Every subject path, every identifier path.
    subjects: u64,
    identifiers: u64,
}

/// The paths a pass follows, one bit each, as the layout splits them.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'l> {
    pub kept: &'l [Vec<&'static str>],
    pub subjects: &'l [Vec<&'static str>],
    pub identifiers: &'l [Vec<&'static str>],
}

/// The paths of `live` whose segment at `depth` is `seg`.
pub(crate) fn narrow(paths: &[Vec<&'static str>], depth: usize, live: u64, seg: &str) -> u64 {
    let mut out = 0;
    let mut rest = live;
    while rest != 0 {
        let i = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        if paths[i].get(depth).is_some_and(|s| *s == seg) {
            out |= 1 << i;
        }
    }
    out
}

/// The paths of `live` that end at `depth`.
fn ending(paths: &[Vec<&'static str>], depth: usize, live: u64) -> u64 {
    let mut out = 0;
    let mut rest = live;
    while rest != 0 {
        let i = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        if paths[i].len() == depth {
            out |= 1 << i;
        }
    }
    out
}

impl Plan {
    /// A plan for `schema` and a layout's paths, when the schema uses only what the pass
    /// handles and each kind has at most 64 paths.
    pub fn new(schema: &Value, paths: Paths<'_>) -> Option<Plan> {
        if [paths.kept, paths.subjects, paths.identifiers].iter().any(|p| p.len() > 64) {
            return None;
        }
        Some(Plan {
            root: compile(schema, schema, 0, 0, &paths)?,
            subjects: every(paths.subjects),
            identifiers: every(paths.identifiers),
        })
    }

    /// Checks `text` and writes what the paths of `keep` reach, as the tree path would write
    /// it; the subjects found in what is written, each with the index of its path, in the
    /// order of the paths and then of the text. `valid(i, s)`: whether string `s` at
    /// identifier path `i` passes its check. `None`: not decided here (see the module).
    pub fn run(
        &self,
        text: &str,
        keep: u64,
        valid: &dyn Fn(usize, &str) -> bool,
        hint: usize,
    ) -> Option<(Vec<u8>, Found)> {
        let mut pass = Pass { src: text, pos: 0, out: Vec::with_capacity(hint), found: Vec::new(), valid };
        pass.skip_ws();
        let first = pass.peek()?;
        let mode = Pass::mode(keep, &self.root, first);
        if mode == Mode::Skip {
            pass.out.extend_from_slice(b"{}");
        }
        pass.value(&self.root, 0, mode, self.subjects, self.identifiers)?;
        pass.skip_ws();
        if pass.pos != text.len() {
            return None;
        }
        pass.found.sort_by_key(|(i, _)| *i);
        Some((pass.out, pass.found))
    }
}

/// The subjects found in what a pass wrote, each with the index of its path.
pub type Found = Vec<(usize, String)>;

/// What becomes of a value in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Checked only.
    Skip,
    /// Written whole: a kept path ends at it or above it.
    Whole,
    /// An object or array some kept paths enter: written with what they reach.
    Part(u64),
}

impl Mode {
    /// What becomes of a member or element of `node` beginning with `first`, in a value
    /// written as `self`; `kept`: the kept paths that go on into it.
    fn within(self, kept: u64, node: &Node, first: u8) -> Mode {
        match self {
            Mode::Skip => Mode::Skip,
            Mode::Whole => Mode::Whole,
            Mode::Part(live) => Pass::mode(live & kept, node, first),
        }
    }
}

struct Pass<'t, 'l> {
    src: &'t str,
    pos: usize,
    out: Vec<u8>,
    found: Found,
    valid: &'l dyn Fn(usize, &str) -> bool,
}

impl<'t> Pass<'t, '_> {
    fn bytes(&self) -> &'t [u8] {
        self.src.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    /// What becomes of a value of `node` that the kept paths `live` reach, beginning with
    /// `first` (as the tree path's minimisation decides it: a scalar stays only where a path
    /// ends at it, an array only where a path enters its elements, an object always).
    fn mode(live: u64, node: &Node, first: u8) -> Mode {
        if live == 0 {
            return Mode::Skip;
        }
        if live & node.ends[0] != 0 {
            return Mode::Whole;
        }
        match first {
            b'{' => Mode::Part(live),
            b'[' if live & node.star[0] != 0 => Mode::Part(live),
            _ => Mode::Skip,
        }
    }

    /// After an opening bracket: whether a member or element follows (else `close` comes at
    /// once, and is taken).
    fn first(&mut self, close: u8) -> bool {
        self.skip_ws();
        let empty = self.peek() == Some(close);
        self.pos += usize::from(empty);
        !empty
    }

    /// After a member or element: whether another follows (`,`, taken) or `close` ends them
    /// (taken); `None` for anything else.
    fn next(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        let more = match self.peek()? {
            b',' => true,
            c if c == close => false,
            _ => return None,
        };
        self.pos += 1;
        Some(more)
    }

    /// Writes the comma before a member or element that is written, when one was written
    /// before it.
    fn comma(&mut self, child: Mode, written: &mut bool) {
        if child != Mode::Skip {
            if *written {
                self.out.push(b',');
            }
            *written = true;
        }
    }

    /// A string without escapes at its opening quote: its text (between the quotes).
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.pos + 1;
        let end = json_text::special(self.bytes(), start);
        if self.bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        Some((start, end))
    }

    fn value(&mut self, node: &Node, depth: usize, mode: Mode, subjects: u64, identifiers: u64) -> Option<()> {
        self.skip_ws();
        let first = self.peek()?;
        let node = if node.one_of.is_empty() {
            node
        } else {
            let t = match first {
                b'{' => OBJECT,
                b'[' => ARRAY,
                b'"' => STRING,
                b't' | b'f' => BOOL,
                b'n' => NULL,
                _ => INT | NUM,
            };
            node.one_of.iter().find(|b| b.types & t != 0)?
        };
        let write = mode != Mode::Skip;
        match first {
            b'{' => self.object(node, depth, mode, subjects, identifiers),
            b'[' => self.array(node, depth, mode, subjects, identifiers),
            b'"' => {
                let (start, end) = self.string()?;
                let s = &self.src[start..end];
                // A string of n bytes holds n/4 to n characters: counted only when that is not
                // enough to tell.
                let n = s.len();
                let ok = node.types & STRING != 0
                    && node.enum_strings.as_ref().is_none_or(|e| e.iter().any(|x| x == s))
                    && (n <= node.max_length && n.div_ceil(4) >= node.min_length
                        || (node.min_length..=node.max_length).contains(&s.chars().count()))
                    && node.pattern.as_ref().is_none_or(|p| p.is_match(s));
                if !ok {
                    return None;
                }
                let mut ids = identifiers & node.ends[2];
                while ids != 0 {
                    let i = ids.trailing_zeros() as usize;
                    ids &= ids - 1;
                    if !(self.valid)(i, s) {
                        return None;
                    }
                }
                if write {
                    self.out.extend_from_slice(&self.bytes()[start - 1..=end]);
                    let mut subs = subjects & node.ends[1];
                    while subs != 0 {
                        let i = subs.trailing_zeros() as usize;
                        subs &= subs - 1;
                        self.found.push((i, s.to_owned()));
                    }
                }
                Some(())
            }
            b't' | b'f' | b'n' => {
                let (word, t): (&[u8], _) = match first {
                    b't' => (b"true", BOOL),
                    b'f' => (b"false", BOOL),
                    _ => (b"null", NULL),
                };
                if !self.bytes()[self.pos..].starts_with(word) || node.types & t == 0 || node.enum_strings.is_some() {
                    return None;
                }
                self.pos += word.len();
                if write {
                    self.out.extend_from_slice(word);
                }
                Some(())
            }
            _ => self.number(node, write),
        }
    }

    /// A number, read as the tree path reads it: a plain integer is checked against the node
    /// and copied; any other is written as the tree path writes it, where the node allows a
    /// number that is not an integer and sets no minimum.
    fn number(&mut self, node: &Node, write: bool) -> Option<()> {
        let start = self.pos;
        let (end, n, plain) = doc::number_at(self.src, start)?;
        let ok = node.enum_strings.is_none()
            && match n.as_i64().filter(|_| plain) {
                Some(i) => node.types & INT != 0 && node.minimum.is_none_or(|m| i >= m),
                None => node.types & NUM != 0 && node.minimum.is_none(),
            };
        if !ok {
            return None;
        }
        self.pos = end;
        if write {
            if plain {
                self.out.extend_from_slice(&self.bytes()[start..end]);
            } else {
                json_text::push_number(&mut self.out, &n);
            }
        }
        Some(())
    }

    /// Steps into a container of type `kind` that `open` begins, writing `open` unless the
    /// container is skipped; whether it is written. `None` when the node allows no such
    /// container here (or it nests too deep).
    fn enter(&mut self, node: &Node, depth: usize, mode: Mode, kind: Types, open: u8) -> Option<bool> {
        if depth + 1 >= MAX_DEPTH || node.types & kind == 0 || node.enum_strings.is_some() {
            return None;
        }
        self.pos += 1;
        let write = mode != Mode::Skip;
        if write {
            self.out.push(open);
        }
        Some(write)
    }

    fn object(&mut self, node: &Node, depth: usize, mode: Mode, subjects: u64, identifiers: u64) -> Option<()> {
        let write = self.enter(node, depth, mode, OBJECT, b'{')?;
        let mut seen = 0u64;
        let mut written = false;
        // Sources write an object's members in one order, mostly the schema's: the property
        // after the last one found is tried first.
        let mut next = 0;
        let mut more = self.first(b'}');
        while more {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return None;
            }
            // The guess is checked against the text itself when its name needs no escape (the key
            // is then the name exactly where the text is the name and a quote), without looking
            // for the key's end first.
            let start = self.pos + 1;
            let guess = node.properties.get(next).map(|(p, _, _)| p.as_bytes()).filter(|p| {
                node.plain_names >> next & 1 != 0
                    && self.bytes().get(start..start + p.len()) == Some(p)
                    && self.bytes().get(start + p.len()) == Some(&b'"')
            });
            let (i, end) = match guess {
                Some(p) => {
                    self.pos = start + p.len() + 1;
                    (next, start + p.len())
                }
                None => {
                    let (start, end) = self.string()?;
                    let key = &self.src[start..end];
                    // A key the schema does not name: outside a closed object a rule is broken;
                    // inside an open one, whether it repeats is not tracked here.
                    (node.properties.iter().position(|(p, _, _)| p == key)?, end)
                }
            };
            next = i + 1;
            let (_, masks, child_node) = &node.properties[i];
            if seen & (1 << i) != 0 {
                return None;
            }
            seen |= 1 << i;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return None;
            }
            self.pos += 1;
            self.skip_ws();
            let child = mode.within(masks[0], child_node, self.peek()?);
            self.comma(child, &mut written);
            if child != Mode::Skip {
                self.out.extend_from_slice(&self.bytes()[start - 1..=end]);
                self.out.push(b':');
            }
            self.value(child_node, depth + 1, child, subjects & masks[1], identifiers & masks[2])?;
            more = self.next(b'}')?;
        }
        if seen & node.required != node.required {
            return None;
        }
        if write {
            self.out.push(b'}');
        }
        Some(())
    }

    fn array(&mut self, node: &Node, depth: usize, mode: Mode, subjects: u64, identifiers: u64) -> Option<()> {
        let write = self.enter(node, depth, mode, ARRAY, b'[')?;
        let item = node.items.as_deref().unwrap_or(&UNRULED);
        let subjects = subjects & node.star[1];
        let identifiers = identifiers & node.star[2];
        let mut count = 0;
        let mut written = false;
        let mut more = self.first(b']');
        while more {
            self.skip_ws();
            let child = mode.within(node.star[0], item, self.peek()?);
            self.comma(child, &mut written);
            self.value(item, depth + 1, child, subjects, identifiers)?;
            count += 1;
            more = self.next(b']')?;
        }
        if !(node.min_items..=node.max_items).contains(&count) {
            return None;
        }
        if write {
            self.out.push(b']');
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pattern(p: &str) -> Pattern {
        Pattern::compile(p).unwrap()
    }

    #[test]
    fn the_layouts_patterns_match_as_a_regular_expression_does() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("^V[0-9]{7}$", &["V0000001", "V1234567"], &["V123456", "V12345678", "v1234567", "V123456a", ""]),
            ("^[0-9]{11}$", &["85073003328"], &["8507300332", "850730033280", "8507300332a"]),
            ("^[0-9]{1,3}/[0-9]{1,3}$", &["1/2", "123/456"], &["/2", "1234/1", "1/"]),
            ("^[A-Z][A-Z0-9-]{1,39}$", &["AB", "A-1", "Z9Z9"], &["A", "a1", "1A", "A_"]),
            ("^[^@\\s]+@[^@\\s]+$", &["a@b", "jan.peeters@example.org"], &["@b", "a@", "a b@c", "a@b@c", "é@b"]),
            ("^\\+[0-9 ]{8,19}$", &["+32 9 123 45 67"], &["32 9 123 45 67", "+32", "+32-9"]),
            ("^x", &["x", "xyz"], &["", "yx"]),
            ("^[a-z]+$", &["abc"], &["", "aBc"]),
            ("^[01][0-9]{9}$", &["0123456789", "1000000000"], &["2123456789"]),
        ];
        for (p, yes, no) in cases {
            let compiled = pattern(p);
            let re = regex::Regex::new(p).unwrap();
            for s in *yes {
                assert!(compiled.is_match(s) && re.is_match(s), "{p} {s}");
            }
            for s in *no {
                // "é" matches the regular expression's `[^@\s]` but is left to the tree path.
                assert!(!compiled.is_match(s), "{p} {s}");
                assert!(!re.is_match(s) || s.contains('é'), "{p} {s}");
            }
        }
        for p in ["V[0-9]", "^(a|b)$", "^a.b$", "^\\d+$", "^a+?$", "^[a-z]{2}?$", "^[[:alpha:]]$", "^a$b"] {
            assert!(Pattern::compile(p).is_none(), "{p}");
        }
    }
}
