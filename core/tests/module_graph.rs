//! The crate's top-level modules form no import cycles: each shared type lives in
//! the lower of the modules that use it (config names dialects, plan reads the
//! config, never the other way round).
//!
//! The graph is read from the source: an edge `a -> b` for every `crate::b` path
//! in a file of module `a` (`src/a.rs` or `src/a/…`), braced `use crate::{b, c}`
//! groups included, comments and literals left out. Within the crate, another
//! module can only be named through `crate::`, or through `super::` at the top
//! of a top-level module's own file (read as `crate::`); any other `super::`
//! stays inside its top-level module. Test code (`#[cfg(test)]` items) is left
//! out: a unit test may check one module's bound against another's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[test]
fn core_modules_form_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.contains_key("config") && graph.contains_key("dialect"),
        "modules not found under {}: {graph:?}",
        src.display()
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "core's modules form a cycle: {}\n(module graph: {graph:#?})",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_check_sees_edges_and_cycles() {
    let code = r#"
        // crate::commented
        use crate::{b, c::{X, Y}};
        use crate::d::Z; /* crate::hidden */
        let s = "crate::in_a_string"; let q = '"'; let l: &'static str = r#x;
        fn f() -> crate::e::T { todo!() }
    "#;
    let names: BTreeSet<String> = crate_paths(&strip(code)).into_iter().collect();
    let want: BTreeSet<String> = ["b", "c", "d", "e"].map(String::from).into();
    assert_eq!(names, want);

    let kept = without_tests(
        "use crate::a;\n#[cfg(test)]\n#[allow(x)]\nmod tests { use crate::b; fn f() { crate::c::g(); } }\n#[cfg(test)] use crate::d;\nuse crate::e;",
    );
    assert_eq!(crate_paths(&kept), ["a", "e"]);

    let top = outer_super_as_crate("use super::f; mod tests { use super::*; }");
    assert_eq!(top, "use crate::f; mod tests { use super::*; }");

    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", &["b"][..]),
        ("b", &["c"][..]),
        ("c", &["a"][..]),
        ("d", &[][..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(["a", "b", "c", "a"].map(String::from).to_vec())
    );
}

/// Top-level module -> the other top-level modules its files name.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(module) = top_module(src, file) else {
            continue;
        };
        let mut code = without_tests(&strip(&std::fs::read_to_string(file).unwrap()));
        // `src/a.rs` or `src/a/mod.rs`: their outer `super` is the crate root.
        let depth = file.strip_prefix(src).unwrap().components().count();
        if depth == 1 || (depth == 2 && file.ends_with("mod.rs")) {
            code = outer_super_as_crate(&code);
        }
        for name in crate_paths(&code) {
            if name != module && modules.contains(&name) {
                graph.entry(module.clone()).or_default().insert(name);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `config` for `src/config.rs`, `dialect` for `src/dialect/openai.rs`; `None`
/// for the crate root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

/// The source without comments and without the contents of string, byte-string
/// and character literals (so that neither can add an edge).
fn strip(code: &str) -> String {
    let c: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        if at(0) == '/' && at(1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(0) == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if (at(0) == 'r' || (at(0) == 'b' && at(1) == 'r'))
            && !c[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_start(&c[i..]).is_some()
        {
            // r"…", r#"…"#, br"…": ends at `"` followed by as many `#`.
            let (skip, hashes) = raw_string_start(&c[i..]).unwrap_or((0, 0));
            i += skip;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if at(0) == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if at(0) == '\'' && (at(1) == '\\' || (at(1) != '\0' && at(2) == '\'')) {
            // A character literal (`'"'`, `'\''`), not a lifetime (`'a`).
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The code without its `#[cfg(test)]` items (a module's block, or an item up
/// to its `;`), other attributes of the item included.
fn without_tests(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(pos) = rest.find(MARK) {
        out.push_str(&rest[..pos]);
        let item = &rest[pos + MARK.len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (i, ch) in item.char_indices() {
            match ch {
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 && ch == '}' {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// At `r"`, `r#…#"`, `br"` or `br#…#"`: the length of that opening and its
/// number of `#`.
fn raw_string_start(c: &[char]) -> Option<(usize, usize)> {
    let start = if c.first() == Some(&'b') { 2 } else { 1 };
    let hashes = c[start..].iter().take_while(|ch| **ch == '#').count();
    (c.get(start + hashes) == Some(&'"')).then_some((start + hashes + 1, hashes))
}

/// `super::` outside any braces (in a top-level module's own file: the crate
/// root) rewritten as `crate::`.
fn outer_super_as_crate(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut depth = 0usize;
    let mut rest = code;
    while let Some(ch) = rest.chars().next() {
        if depth == 0 && rest.starts_with("super::") {
            out.push_str("crate::");
            rest = &rest["super::".len()..];
            continue;
        }
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

/// The first segment of every `crate::` path, braced groups expanded.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(pos) = rest.find("crate::") {
        let before = rest[..pos].chars().last();
        rest = &rest[pos + "crate::".len()..];
        // `$crate::` and `foo_crate::` are not this crate's paths.
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == '$') {
            continue;
        }
        let after = rest.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            out.extend(group_heads(group));
        } else {
            out.push(ident(after));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The first identifier of each item of a braced group (`b, c::{X, Y}}` gives
/// `b` and `c`).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                heads.push(ident(&group[i..]));
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle of `graph` as its modules, the first repeated at the end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        marks.insert(node, Mark::OnPath);
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next.as_str()).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let from = path.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|s| s.to_string()).collect();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if marks.get(node.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}
