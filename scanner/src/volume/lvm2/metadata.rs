//! The LVM2 text metadata format: a small recursive-descent parser for lvm2's configuration
//! syntax (`lib/config/config.c`, `lib/format_text/import_vsn1.c`) as libvslvm's format document
//! describes it in section 4 (metadata): sections `name { ... }`, assignments `key = value`,
//! values that are strings (`"..."` with `\"` and `\\` escapes), integers, floats or lists
//! `[v, v, ...]`, and `#` comments.
//!
//! The input comes from an untrusted disk: nesting depth, the number of nodes, list lengths and
//! string sizes are bounded by named limits, and every error names the byte offset in the text.

use crate::error::{Error, Result};

/// Deepest nesting of sections and lists (a VG's metadata nests 4 levels deep).
pub const MAX_DEPTH: usize = 32;
/// Most values and sections in one metadata text.
pub const MAX_NODES: usize = 1 << 20;
/// Longest string value, in bytes.
pub const MAX_STRING: usize = 64 << 10;

/// A value in the metadata text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A quoted string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A number with a fractional part (kept for completeness; VG metadata has none).
    Float(f64),
    /// A list.
    List(Vec<Value>),
    /// A section.
    Section(Section),
}

/// A section: its items in order (lvm2 keeps them ordered, and names are unique within one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// Items in order.
    pub items: Vec<(String, Value)>,
    /// Byte offset of the section's first item in the text (for errors).
    pub offset: u64,
}

impl Section {
    /// The value named `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The sub-section named `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        match self.get(key)? {
            Value::Section(s) => Some(s),
            _ => None,
        }
    }

    /// Every sub-section, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, v)| match v {
            Value::Section(s) => Some((k.as_str(), s)),
            _ => None,
        })
    }

    /// The integer named `key`.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string named `key`.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The list named `key`.
    pub fn list(&self, key: &str) -> Option<&[Value]> {
        match self.get(key)? {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Whether the string list `key` (a `status` or `flags` list) holds `flag`.
    pub fn has_flag(&self, key: &str, flag: &str) -> bool {
        self.list(key)
            .is_some_and(|l| l.iter().any(|v| matches!(v, Value::Str(s) if s == flag)))
    }
}

/// Parses a whole metadata text into its top-level section. `object` names the text in errors
/// (the PV and metadata area it came from).
pub fn parse(text: &[u8], object: &str) -> Result<Section> {
    let mut p = Parser {
        text,
        pos: 0,
        nodes: 0,
        object,
    };
    let top = p.items(0, None)?;
    Ok(top)
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    nodes: usize,
    object: &'a str,
}

/// Characters that end a bare word.
fn is_delimiter(c: u8) -> bool {
    c.is_ascii_whitespace() || b"#{}[]=,\"'".contains(&c)
}

impl Parser<'_> {
    fn err(&self, at: usize, what: impl Into<String>) -> Error {
        Error::corrupt(
            self.object,
            at as u64,
            format!("LVM2 metadata text: {}", what.into()),
        )
    }

    fn count_node(&mut self) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Error::limit(
                self.object,
                format!("LVM2 metadata has more than {MAX_NODES} values"),
            ));
        }
        Ok(())
    }

    /// Skips whitespace and comments; returns the next byte without consuming it.
    fn peek(&mut self) -> Option<u8> {
        loop {
            let c = *self.text.get(self.pos)?;
            if c.is_ascii_whitespace() || c == 0 {
                self.pos += 1;
            } else if c == b'#' {
                while self.text.get(self.pos).is_some_and(|&c| c != b'\n') {
                    self.pos += 1;
                }
            } else {
                return Some(c);
            }
        }
    }

    fn expect(&mut self, want: u8) -> Result<()> {
        match self.peek() {
            Some(c) if c == want => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(self.err(
                self.pos,
                format!("expected '{}', found '{}'", want as char, c.escape_ascii()),
            )),
            None => Err(self.err(
                self.pos,
                format!("expected '{}', found the end", want as char),
            )),
        }
    }

    fn word(&mut self) -> Result<&str> {
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(|&c| !is_delimiter(c)) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.err(start, "expected a name"));
        }
        std::str::from_utf8(&self.text[start..self.pos])
            .map_err(|_| self.err(start, "name is not UTF-8"))
    }

    /// Items until `}` (inside a section) or the end of the text (top level).
    fn items(&mut self, depth: usize, open: Option<usize>) -> Result<Section> {
        if depth > MAX_DEPTH {
            return Err(Error::limit(
                self.object,
                format!(
                    "LVM2 metadata nests deeper than {MAX_DEPTH} levels at byte {:#x}",
                    self.pos
                ),
            ));
        }
        let mut section = Section {
            items: Vec::new(),
            offset: self.pos as u64,
        };
        loop {
            match self.peek() {
                None => {
                    if let Some(at) = open {
                        return Err(self.err(at, "section is never closed"));
                    }
                    return Ok(section);
                }
                Some(b'}') => {
                    if open.is_none() {
                        return Err(self.err(self.pos, "'}' without a section"));
                    }
                    self.pos += 1;
                    return Ok(section);
                }
                Some(_) => {}
            }
            let key_at = self.pos;
            let key = self.word()?.to_string();
            self.count_node()?;
            let value = match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    Value::Section(self.items(depth + 1, Some(key_at))?)
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.value(depth + 1)?
                }
                _ => return Err(self.err(self.pos, format!("expected '=' or '{{' after {key}"))),
            };
            if section.items.iter().any(|(k, _)| *k == key) {
                return Err(self.err(key_at, format!("{key} is defined twice")));
            }
            section.items.push((key, value));
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::limit(
                self.object,
                format!(
                    "LVM2 metadata nests deeper than {MAX_DEPTH} levels at byte {:#x}",
                    self.pos
                ),
            ));
        }
        match self.peek() {
            Some(b'[') => {
                let open = self.pos;
                self.pos += 1;
                let mut list = Vec::new();
                loop {
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Value::List(list));
                        }
                        None => return Err(self.err(open, "list is never closed")),
                        _ => {}
                    }
                    if !list.is_empty() {
                        self.expect(b',')?;
                    }
                    self.count_node()?;
                    list.push(self.value(depth + 1)?);
                }
            }
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::Str),
            Some(_) => {
                let at = self.pos;
                let w = self.word()?.to_string();
                if let Ok(i) = w.parse::<i64>() {
                    Ok(Value::Int(i))
                } else if let Ok(f) = w.parse::<f64>() {
                    Ok(Value::Float(f))
                } else {
                    Err(self.err(at, format!("{:?} is not a value", w.escape_debug())))
                }
            }
            None => Err(self.err(self.pos, "expected a value, found the end")),
        }
    }

    fn string(&mut self, quote: u8) -> Result<String> {
        let open = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.text.get(self.pos) else {
                return Err(self.err(open, "string is never closed"));
            };
            self.pos += 1;
            match c {
                b'\\' => {
                    let Some(&e) = self.text.get(self.pos) else {
                        return Err(self.err(open, "string is never closed"));
                    };
                    self.pos += 1;
                    out.push(e);
                }
                c if c == quote => break,
                c => out.push(c),
            }
            if out.len() > MAX_STRING {
                return Err(Error::limit(
                    self.object,
                    format!(
                        "LVM2 metadata string at byte {open:#x} is longer than {MAX_STRING} bytes"
                    ),
                ));
            }
        }
        String::from_utf8(out).map_err(|_| self.err(open, "string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"vg0 {
id = "abc"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192 # 4 MiB
physical_volumes {
pv0 {
id = "x"
pe_start = 2048
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
version = 1
description = "with \"quotes\" and \\"
"#;

    #[test]
    fn parses_sample() {
        let top = parse(SAMPLE.as_bytes(), "t").unwrap();
        let vg = top.section("vg0").unwrap();
        assert_eq!(vg.int("seqno"), Some(3));
        assert!(vg.has_flag("status", "WRITE"));
        assert_eq!(vg.list("flags"), Some(&[][..]));
        let pv = vg
            .section("physical_volumes")
            .unwrap()
            .section("pv0")
            .unwrap();
        assert_eq!(pv.int("pe_start"), Some(2048));
        assert_eq!(top.str("description"), Some("with \"quotes\" and \\"));
        assert_eq!(top.int("version"), Some(1));
    }

    #[test]
    fn errors_name_offsets() {
        let e = parse(b"a {\nb = \n", "t").unwrap_err().to_string();
        assert!(e.contains("expected a value"), "{e}");
        let e = parse(b"a { b = 1\n", "t").unwrap_err().to_string();
        assert!(e.contains("never closed") && e.contains("0x0"), "{e}");
        let e = parse(b"a = 1\na = 2\n", "t").unwrap_err().to_string();
        assert!(e.contains("twice") && e.contains("0x6"), "{e}");
        let e = parse(b"}", "t").unwrap_err().to_string();
        assert!(e.contains("without a section"), "{e}");
        let e = parse(b"a = [1 2]", "t").unwrap_err().to_string();
        assert!(e.contains("expected ','"), "{e}");
    }

    #[test]
    fn deep_nesting_is_a_limit_not_a_stack_overflow() {
        let mut t = String::new();
        for _ in 0..100_000 {
            t.push_str("a {");
        }
        let e = parse(t.as_bytes(), "t").unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{e}");
        let t = "a = ".to_string() + &"[".repeat(100_000);
        let e = parse(t.as_bytes(), "t").unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{e}");
    }
}
