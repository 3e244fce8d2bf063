//! Shared pieces of Bursar's fuzz targets (dev-dependency only).
//!
//! Every decoder of outside bytes has a `fuzz_*` test in its crate. They are
//! proptest properties on stable Rust: structure-aware (start from a valid
//! encoding, then mutate it, so the input gets past the first checks) and
//! bounded by a small default case count so the suite stays fast.
//! `BURSAR_FUZZ_CASES` raises the count for a long run, e.g.
//! `BURSAR_FUZZ_CASES=200000 cargo test --release -p bursar-core fuzz_`.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

/// Environment variable that sets the number of cases of every target.
pub const CASES_ENV: &str = "BURSAR_FUZZ_CASES";

/// Cases to run: `BURSAR_FUZZ_CASES` if set and valid, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var(CASES_ENV).ok().and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// A proptest configuration for a fuzz target. No regression files are
/// written into the source tree: a finding becomes a named regression test.
pub fn config(default_cases: u32) -> Config {
    Config {
        cases: cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 4096,
        // Shrinking a long run's finding should not take longer than the run.
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

/// Integers that sit on boundaries decoders get wrong.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
];

/// One edit of a byte string.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Overwrite a little-endian integer of 1, 2, 4 or 8 bytes with a
    /// boundary value (or its neighbour).
    Int(Index, u8, Index, bool),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Remove up to `n` bytes.
    Remove(Index, usize),
    /// Copy a run of bytes over another place (repeats fields and records).
    Copy(Index, Index, usize),
    /// Cut the input short.
    Truncate(Index),
}

/// Applies `m` to `bytes`. Positions are taken modulo the current length.
pub fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    let len = bytes.len();
    match m {
        Mutation::Flip(i, bit) if len > 0 => bytes[at(i, len)] ^= 1 << (bit % 8),
        Mutation::Set(i, b) if len > 0 => bytes[at(i, len)] = *b,
        Mutation::Int(i, width, v, neighbour) if len > 0 => {
            let width = [1usize, 2, 4, 8][usize::from(*width % 4)].min(len);
            let mut value = INTERESTING[v.index(INTERESTING.len())];
            if *neighbour {
                value = value.wrapping_add(1);
            }
            let start = at(i, len).min(len - width);
            bytes[start..start + width].copy_from_slice(&value.to_le_bytes()[..width]);
        }
        Mutation::Insert(i, b) => {
            let p = at(i, len + 1);
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Remove(i, n) if len > 0 => {
            let p = at(i, len);
            bytes.drain(p..(p + n).min(len));
        }
        Mutation::Copy(from, to, n) if len > 0 => {
            let (from, to) = (at(from, len), at(to, len));
            let n = (*n).min(len - from).min(len - to);
            bytes.copy_within(from..from + n, to);
        }
        Mutation::Truncate(i) => bytes.truncate(at(i, len + 1)),
        _ => {}
    }
}

/// Any one mutation; small edits are more likely than large ones.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        4 => (any::<Index>(), any::<u8>(), any::<Index>(), any::<bool>()).prop_map(|(i, w, v, n)| Mutation::Int(i, w, v, n)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..256).prop_map(|(a, b, n)| Mutation::Copy(a, b, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// Up to `max` mutations (zero is allowed: the valid input must pass too).
pub fn mutations(max: usize) -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 0..=max)
}

/// `bytes` with `muts` applied in order.
pub fn mutated(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        apply(&mut bytes, m);
    }
    bytes
}

/// One edit of a JSON document, keeping it JSON so serde's shape checks,
/// not the tokenizer, are what is exercised.
#[derive(Clone, Debug)]
pub enum JsonMutation {
    /// Replace a value (chosen by a walk) with another of any type.
    Replace(Index, JsonValue),
    /// Remove a member of an object or an item of an array.
    Remove(Index, Index),
    /// Add a member with a known or unknown name.
    Add(Index, String, JsonValue),
    /// Duplicate the document into an array of two (batch shapes).
    Wrap,
}

/// Values that stress numeric, string and type handling.
#[derive(Clone, Debug)]
pub struct JsonValue(pub serde_json::Value);

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::sample::select(INTERESTING).prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        "[0-9]{0,45}".prop_map(Value::String),
        "-?[0-9]{1,40}(\\.[0-9]{0,20})?".prop_map(Value::String),
        "[a-z_]{0,12}".prop_map(Value::String),
        ".{0,40}".prop_map(Value::String),
        (0usize..600).prop_map(|n| Value::String("x".repeat(n))),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_leaf().prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any one JSON mutation. `names` are member names the target knows, so
/// added members hit real fields.
pub fn json_mutation(names: &'static [&'static str]) -> impl Strategy<Value = JsonMutation> {
    let name = prop_oneof![proptest::sample::select(names).prop_map(String::from), "[a-z_]{1,12}"];
    prop_oneof![
        6 => (any::<Index>(), json_value()).prop_map(|(i, v)| JsonMutation::Replace(i, JsonValue(v))),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, j)| JsonMutation::Remove(i, j)),
        3 => (any::<Index>(), name, json_value()).prop_map(|(i, n, v)| JsonMutation::Add(i, n, JsonValue(v))),
        1 => Just(JsonMutation::Wrap),
    ]
}

/// Up to `max` JSON mutations.
pub fn json_mutations(names: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<JsonMutation>> {
    proptest::collection::vec(json_mutation(names), 0..=max)
}

/// Every value of a document, depth first (the document itself first).
fn count_values(v: &serde_json::Value) -> usize {
    1 + match v {
        serde_json::Value::Array(a) => a.iter().map(count_values).sum(),
        serde_json::Value::Object(o) => o.values().map(count_values).sum(),
        _ => 0,
    }
}

/// Calls `f` on the `n`th value of a document in depth-first order;
/// returns whether it was found.
fn at_value(v: &mut serde_json::Value, n: &mut usize, f: &mut dyn FnMut(&mut serde_json::Value)) -> bool {
    if *n == 0 {
        f(v);
        return true;
    }
    *n -= 1;
    match v {
        serde_json::Value::Array(a) => a.iter_mut().any(|c| at_value(c, n, f)),
        serde_json::Value::Object(o) => o.values_mut().any(|c| at_value(c, n, f)),
        _ => false,
    }
}

/// Applies one JSON mutation.
pub fn apply_json(doc: &mut serde_json::Value, m: &JsonMutation) {
    let mut n = match m {
        JsonMutation::Replace(i, _) | JsonMutation::Remove(i, _) | JsonMutation::Add(i, _, _) => {
            i.index(count_values(doc))
        }
        JsonMutation::Wrap => {
            *doc = serde_json::Value::Array(vec![doc.clone(), doc.clone()]);
            return;
        }
    };
    at_value(doc, &mut n, &mut |v| edit(v, m));
}

fn edit(v: &mut serde_json::Value, m: &JsonMutation) {
    use serde_json::Value;
    match (m, v) {
        (JsonMutation::Replace(_, new), v) => *v = new.0.clone(),
        (JsonMutation::Remove(_, j), Value::Array(a)) if !a.is_empty() => {
            a.remove(j.index(a.len()));
        }
        (JsonMutation::Remove(_, j), Value::Object(o)) if !o.is_empty() => {
            if let Some(key) = o.keys().nth(j.index(o.len())).cloned() {
                o.remove(&key);
            }
        }
        (JsonMutation::Add(_, name, new), Value::Object(o)) => {
            o.insert(name.clone(), new.0.clone());
        }
        (JsonMutation::Add(_, _, new), Value::Array(a)) => a.push(new.0.clone()),
        _ => {}
    }
}

/// `doc` with `muts` applied in order.
pub fn json_mutated(mut doc: serde_json::Value, muts: &[JsonMutation]) -> serde_json::Value {
    for m in muts {
        apply_json(&mut doc, m);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn mutations_never_panic_on_any_length() {
        let mut runner = TestRunner::deterministic();
        for len in [0usize, 1, 3, 9, 100] {
            for _ in 0..500 {
                let muts = mutations(8).new_tree(&mut runner).unwrap().current();
                let out = mutated(vec![7; len], &muts);
                assert!(out.len() <= len + 8 * 16);
            }
        }
    }

    #[test]
    fn json_mutations_apply_anywhere() {
        let mut runner = TestRunner::deterministic();
        let doc = serde_json::json!({"a": [1, {"b": "c"}], "d": null});
        for _ in 0..500 {
            let muts = json_mutations(&["a", "d"], 6).new_tree(&mut runner).unwrap().current();
            let out = json_mutated(doc.clone(), &muts);
            assert!(serde_json::to_vec(&out).is_ok());
        }
    }
}
