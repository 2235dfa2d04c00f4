//! What an `nccl.h` declares, read from its preprocessed text (the output of
//! `cc::Build::expand` on `expando.c`): the functions, the fields of
//! `ncclConfig_t`, the enumerators of every enum, and the `NCCL_*` macros.
//!
//! This is not a C parser. It tokenizes the preprocessed text and follows the
//! nesting of brackets, which is all that the shape of `nccl.h` needs
//! (top-level declarations, one typedef'd struct for the config, typedef'd
//! enums). Shared by the build script (per-symbol cfgs for the header found)
//! and `cargo xtask bindgen` (the `since` table, from every release's header),
//! so both read headers the same way.

#![allow(dead_code)] // each includer uses a different part

use std::collections::BTreeSet;

/// Functions that `nccl.h` declares but that are not NCCL's API (its own
/// header says so; the bindgen configuration blocks them too).
pub const NOT_API: &[&str] = &["ncclResetDebugInit"];

/// The declarations of one `nccl.h`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declarations {
    /// Functions whose name starts with `nccl` (the `pnccl` profiling twins
    /// are left out).
    pub functions: BTreeSet<String>,
    /// The fields of `ncclConfig_t`, in declaration order.
    pub config_fields: Vec<ConfigField>,
    /// The enumerators of `ncclResult_t`, with their values, in order.
    pub result_codes: Vec<(String, i64)>,
    /// The enumerators of every other enum, and the object-like `NCCL_*`
    /// macros of the raw header.
    pub constants: BTreeSet<String>,
    /// The entries of `NCCL_CONFIG_INITIALIZER`, as written in the raw header
    /// (comments removed, whitespace squeezed).
    pub config_initializer: Vec<String>,
}

/// One field of `ncclConfig_t`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigField {
    /// The field name (`blocking`).
    pub name: String,
    /// Its declaration without the name (`int`, `const char *`).
    pub c_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok<'a> {
    Ident(&'a str),
    Number(&'a str),
    Punct(char),
}

fn tokenize(text: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    for line in text.lines() {
        // line markers and pragmas left by the preprocessor
        if line.trim_start().starts_with('#') {
            continue;
        }
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c.is_ascii_whitespace() {
                i += 1;
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(&line[s..i]));
            } else if c.is_ascii_digit() {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Tok::Number(&line[s..i]));
            } else if c == b'"' || c == b'\'' {
                // string and character literals: skipped whole
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            } else {
                let ch = line[i..].chars().next().unwrap_or(' ');
                out.push(Tok::Punct(ch));
                i += ch.len_utf8();
            }
        }
    }
    out
}

fn is_open(t: &Tok<'_>) -> bool {
    matches!(t, Tok::Punct('(' | '[' | '{'))
}

fn is_close(t: &Tok<'_>) -> bool {
    matches!(t, Tok::Punct(')' | ']' | '}'))
}

/// The index of the bracket closing the one opened at `open`.
fn matching(toks: &[Tok<'_>], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        if is_open(t) {
            depth += 1;
        } else if is_close(t) {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// Reads the declarations of a header from its preprocessed text and its raw
/// text (the raw text is needed for the macros, which preprocessing removes).
pub fn scan(preprocessed: &str, raw_header: &str) -> Result<Declarations, String> {
    let toks = tokenize(preprocessed);
    let mut d = Declarations::default();

    // Top-level statements: split at `;` outside brackets.
    let mut depth = 0usize;
    let mut start = 0usize;
    for i in 0..toks.len() {
        let t = &toks[i];
        if is_open(t) {
            depth += 1;
        } else if is_close(t) {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && *t == Tok::Punct(';') {
            statement(&toks[start..i], &mut d)?;
            start = i + 1;
        }
    }
    if d.result_codes.is_empty() {
        return Err(
            "no `ncclResult_t` enum in the preprocessed header: is this NCCL's nccl.h?".into(),
        );
    }
    if d.config_fields.is_empty() {
        return Err("no `ncclConfig_t` struct in the preprocessed header".into());
    }
    macros(raw_header, &mut d);
    Ok(d)
}

/// One top-level statement (without its `;`).
fn statement(s: &[Tok<'_>], d: &mut Declarations) -> Result<(), String> {
    let Some(first) = s.first() else {
        return Ok(());
    };
    if *first == Tok::Ident("typedef") {
        // `typedef struct tag { ... } name` / `typedef enum { ... } name`
        let kind = match s.get(1) {
            Some(Tok::Ident(k @ ("struct" | "enum"))) => *k,
            _ => return Ok(()),
        };
        let Some(open) = s.iter().position(|t| *t == Tok::Punct('{')) else {
            return Ok(());
        };
        let close = matching(s, open).ok_or("unbalanced braces in a typedef")?;
        let name = match s.get(close + 1) {
            Some(Tok::Ident(n)) => *n,
            _ => return Ok(()),
        };
        let body = &s[open + 1..close];
        if kind == "enum" {
            let items = enumerators(body)?;
            if name == "ncclResult_t" {
                d.result_codes = items;
            } else {
                d.constants.extend(items.into_iter().map(|(n, _)| n));
            }
        } else if name == "ncclConfig_t" {
            d.config_fields = fields(body)?;
        }
        return Ok(());
    }
    // A function declaration: the first `ident (` outside brackets, past
    // any `__attribute__((...))`.
    let mut i = 0;
    while i < s.len() {
        match (&s[i], s.get(i + 1)) {
            (Tok::Ident(name), Some(Tok::Punct('('))) if name.starts_with("__") => {
                i = matching(s, i + 1).ok_or("unbalanced parentheses")? + 1;
            }
            (Tok::Ident(name), Some(Tok::Punct('('))) => {
                if name.starts_with("nccl") && !NOT_API.contains(name) {
                    d.functions.insert((*name).to_string());
                }
                break;
            }
            (t, _) if is_open(t) => i = matching(s, i).ok_or("unbalanced brackets")? + 1,
            _ => i += 1,
        }
    }
    Ok(())
}

/// `A = 0, B, C = 7` → names with values (implicit ones counted on).
fn enumerators(body: &[Tok<'_>]) -> Result<Vec<(String, i64)>, String> {
    let mut out = Vec::new();
    let mut next = 0i64;
    for item in split_top(body, ',') {
        let Some(Tok::Ident(name)) = item.first() else {
            continue;
        };
        let value = match item.get(1) {
            Some(Tok::Punct('=')) => eval(&item[2..]).unwrap_or(next),
            _ => next,
        };
        out.push(((*name).to_string(), value));
        next = value.wrapping_add(1);
    }
    Ok(out)
}

/// The value of a simple constant expression (`8`, `0x10`, `(-0x7fffffff - 1)`);
/// `None` for anything else.
fn eval(e: &[Tok<'_>]) -> Option<i64> {
    let e = match (e.first(), e.last()) {
        (Some(Tok::Punct('(')), Some(Tok::Punct(')'))) if matching(e, 0) == Some(e.len() - 1) => {
            &e[1..e.len() - 1]
        }
        _ => e,
    };
    let num = |t: &Tok<'_>| -> Option<i64> {
        let Tok::Number(n) = t else { return None };
        let n = n.trim_end_matches(['u', 'U', 'l', 'L']);
        match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
            Some(h) => i64::from_str_radix(h, 16).ok(),
            None => n.parse().ok(),
        }
    };
    match e {
        [n] => num(n),
        [Tok::Punct('-'), n] => num(n).map(|v| -v),
        [Tok::Punct('-'), a, Tok::Punct('-'), b] => Some(-num(a)? - num(b)?),
        _ => None,
    }
}

/// Member declarations of a struct body → field names and types.
fn fields(body: &[Tok<'_>]) -> Result<Vec<ConfigField>, String> {
    let mut out = Vec::new();
    for member in split_top(body, ';') {
        if member.is_empty() {
            continue;
        }
        // the name is the last identifier before any array brackets
        let end = member
            .iter()
            .position(|t| *t == Tok::Punct('['))
            .unwrap_or(member.len());
        let (pos, name) = member[..end]
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, t)| match t {
                Tok::Ident(n) => Some((i, *n)),
                _ => None,
            })
            .ok_or("a member of ncclConfig_t without a name")?;
        let c_type = member[..pos]
            .iter()
            .map(|t| match t {
                Tok::Ident(s) | Tok::Number(s) => (*s).to_string(),
                Tok::Punct(c) => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        out.push(ConfigField {
            name: name.to_string(),
            c_type,
        });
    }
    Ok(out)
}

/// Splits at `sep` outside brackets.
fn split_top<'t, 'a>(toks: &'t [Tok<'a>], sep: char) -> Vec<&'t [Tok<'a>]> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        if is_open(t) {
            depth += 1;
        } else if is_close(t) {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && *t == Tok::Punct(sep) {
            out.push(&toks[start..i]);
            start = i + 1;
        }
    }
    out.push(&toks[start..]);
    out
}

/// Object-like `NCCL_*` macros and the entries of `NCCL_CONFIG_INITIALIZER`,
/// from the raw header text.
fn macros(raw: &str, d: &mut Declarations) {
    let text = strip_comments(raw).replace("\\\n", " ");
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let Some(rest) = rest.trim_start().strip_prefix("define") else {
            continue;
        };
        let rest = rest.trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (name, body) = rest.split_at(name_len);
        if body.starts_with('(') || !name.starts_with("NCCL_") || name == "NCCL_H_" {
            continue; // function-like, not NCCL's, or the include guard
        }
        d.constants.insert(name.to_string());
        if name == "NCCL_CONFIG_INITIALIZER" {
            let body = body.trim();
            let inner = body
                .strip_prefix('{')
                .and_then(|b| b.strip_suffix('}'))
                .unwrap_or(body);
            d.config_initializer = split_c_list(inner)
                .into_iter()
                .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|e| !e.is_empty())
                .collect();
        }
    }
}

/// Splits a C initializer list at top-level commas.
fn split_c_list(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// C with `/* */` and `//` comments removed (string literals kept whole).
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'/', Some(b'*')) => {
                out.push_str(&s[copied..i]);
                let end = s[i + 2..].find("*/").map_or(s.len(), |e| i + 2 + e + 2);
                out.push(' ');
                i = end;
                copied = i;
            }
            (b'/', Some(b'/')) => {
                out.push_str(&s[copied..i]);
                i = s[i..].find('\n').map_or(s.len(), |e| i + e);
                copied = i;
            }
            (b'"', _) => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out.push_str(&s[copied.min(s.len())..]);
    out
}
