//! What `cargo xtask profile` reads back from callgrind: callgrind_annotate's
//! listings (self and inclusive cost per function) and the call graph of a
//! callgrind file, into counters that keep the order things first appeared
//! in (ties in the report's rankings go to the first seen, as the listings
//! order them).

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;

use crate::Res;

/// Counts by key, in the order the keys were first counted.
#[derive(Debug, Default, Clone)]
pub struct Counter<K> {
    keys: Vec<K>,
    vals: Vec<f64>,
    at: HashMap<K, usize>,
}

impl<K: Clone + Eq + std::hash::Hash> Counter<K> {
    pub fn new() -> Counter<K> {
        Counter {
            keys: Vec::new(),
            vals: Vec::new(),
            at: HashMap::new(),
        }
    }

    fn slot(&mut self, k: &K) -> &mut f64 {
        let i = match self.at.get(k) {
            Some(&i) => i,
            None => {
                self.keys.push(k.clone());
                self.vals.push(0.0);
                self.at.insert(k.clone(), self.keys.len() - 1);
                self.keys.len() - 1
            }
        };
        &mut self.vals[i]
    }

    pub fn add(&mut self, k: &K, n: f64) {
        *self.slot(k) += n;
    }

    /// Keeps the larger of the count so far and `n`.
    pub fn max(&mut self, k: &K, n: f64) {
        let v = self.slot(k);
        *v = v.max(n);
    }

    pub fn get(&self, k: &K) -> f64 {
        self.at.get(k).map_or(0.0, |&i| self.vals[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, f64)> {
        self.keys.iter().zip(self.vals.iter().copied())
    }

    pub fn sum(&self) -> f64 {
        self.vals.iter().sum()
    }

    /// Largest first; equal counts in first-seen order.
    pub fn most_common(&self) -> Vec<(K, f64)> {
        let mut v: Vec<(K, f64)> = self.iter().map(|(k, n)| (k.clone(), n)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    /// The key of the largest count (the first seen among equals).
    pub fn top(&self) -> Option<&K> {
        let mut best: Option<(usize, f64)> = None;
        for (i, &n) in self.vals.iter().enumerate() {
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((i, n));
            }
        }
        best.map(|(i, _)| &self.keys[i])
    }
}

/// One row of a listing: instructions, source file, function, object file.
pub struct Row {
    pub ir: f64,
    pub file: String,
    pub func: String,
    pub obj: String,
}

fn read_lossy(path: &Path) -> Res<String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// callgrind_annotate's listing, `  1,234 (12.3%)  file:function [object]`
/// per line: the rows and the PROGRAM TOTALS.
pub fn listing(path: &Path) -> Res<(Vec<Row>, Option<f64>)> {
    let row = Regex::new(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")?;
    let obj_re = Regex::new(r"\s\[([^\]]+)\]$")?;
    let (mut rows, mut total) = (Vec::new(), None);
    for line in read_lossy(path)?.lines() {
        let Some(m) = row.captures(line) else {
            continue;
        };
        let ir: f64 = m[1].replace(',', "").parse()?;
        let mut rest = m.get(2).map_or("", |g| g.as_str());
        if rest.trim() == "PROGRAM TOTALS" {
            total = Some(ir);
            continue;
        }
        let mut obj = "";
        if let Some(o) = obj_re.captures(rest) {
            obj = o.get(1).map_or("", |g| g.as_str());
            rest = &rest[..o.get(0).map_or(rest.len(), |g| g.start())];
        }
        let (file, func) = rest.split_once(':').unwrap_or((rest, ""));
        rows.push(Row {
            ir,
            file: file.to_owned(),
            func: func.trim().to_owned(),
            obj: obj.to_owned(),
        });
    }
    Ok((rows, total))
}

/// Caller and callee, either unnamed when the file had no name for it.
pub type Edge = (Option<String>, Option<String>);

/// The call graph of a callgrind file (names compressed, as callgrind
/// writes them): how often each caller called each callee.
pub fn call_graph(path: &Path) -> Res<Counter<Edge>> {
    let name = Regex::new(r"^c?fn=\((\d+)\)(?: (.*))?$")?;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut calls = Counter::new();
    let (mut func, mut callee): (Option<String>, Option<String>) = (None, None);
    for line in read_lossy(path)?.lines() {
        if line.starts_with("fn=") || line.starts_with("cfn=") {
            let Some(m) = name.captures(line) else {
                continue;
            };
            if let Some(n) = m.get(2).filter(|n| !n.as_str().is_empty()) {
                names.insert(m[1].to_owned(), n.as_str().to_owned());
            }
            let named = names.get(&m[1]).cloned();
            if line.starts_with('f') {
                func = named;
            } else {
                callee = named;
            }
        } else if let Some(rest) = line.strip_prefix("calls=") {
            let n: f64 = rest.split_whitespace().next().unwrap_or("0").parse()?;
            calls.add(&(func.clone(), callee.clone()), n);
        }
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::{call_graph, listing, Counter};

    #[test]
    fn a_listing_gives_rows_objects_and_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("self.txt");
        std::fs::write(
            &p,
            "Ir\n858,336,278 (100.0%)  PROGRAM TOTALS\n\nIr  file:function\n\
             58,986,705 ( 6.87%)  ./string/memmove.S:__memcpy_avx_unaligned_erms [/usr/lib/libc.so.6]\n \
             9,781 ( 1.14%)  /src/decoder.rs:<a::B as c::D>::decode [/t/capture]\n",
        )
        .unwrap();
        let (rows, total) = listing(&p).unwrap();
        assert_eq!(total, Some(858_336_278.0));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ir, 58_986_705.0);
        assert_eq!(rows[0].file, "./string/memmove.S");
        assert_eq!(rows[0].func, "__memcpy_avx_unaligned_erms");
        assert_eq!(rows[0].obj, "/usr/lib/libc.so.6");
        assert_eq!(rows[1].func, "<a::B as c::D>::decode");
    }

    #[test]
    fn the_call_graph_follows_compressed_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.callgrind");
        std::fs::write(
            &p,
            "fn=(1) main\ncfn=(2) malloc\ncalls=3 0\n0 10\nfn=(3) f\ncfn=(2)\ncalls=2 0\n0 5\n\
             cfn=(2)\ncalls=1 0\n0 5\n",
        )
        .unwrap();
        let g = call_graph(&p).unwrap();
        let edge = |a: &str, b: &str| (Some(a.to_owned()), Some(b.to_owned()));
        assert_eq!(g.get(&edge("main", "malloc")), 3.0);
        assert_eq!(g.get(&edge("f", "malloc")), 3.0);
    }

    #[test]
    fn ties_keep_the_order_first_seen() {
        let mut c = Counter::new();
        for (k, n) in [("a", 1.0), ("b", 2.0), ("c", 2.0), ("a", 0.5)] {
            c.add(&k, n);
        }
        let order: Vec<&str> = c.most_common().into_iter().map(|(k, _)| k).collect();
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(c.top(), Some(&"b"));
    }
}
