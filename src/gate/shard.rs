//! Which part of the suite one run judges (`probegate check --shard I/N`),
//! so a large suite can be spread over CI jobs and combined again with
//! `probegate report merge`.
//!
//! A shard holds whole concepts: a concept's test set is run through the
//! candidate once for all its monitors, so splitting a concept would run the
//! same forward passes in two jobs. Concepts are dealt to shards largest
//! test set first, each to the least-loaded shard (ties to the lower index,
//! concepts of equal size by name), so every job computes the same
//! partition from the suite alone and the jobs end about together. Each
//! shard spends its share of the policy's example budget, in proportion to
//! the labeled examples it holds, so the shards together never exceed it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `I/N`: the I-th of N shards, counted from 1 as CI matrices count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// Most shards one suite is split into; a typo such as `1/1000` is a
/// mistake, not a plan.
pub const MAX_SHARDS: usize = 256;

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not I/N (the I-th of N shards, 1 ≤ I ≤ N ≤ {MAX_SHARDS}, e.g. 2/4)")
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count || count > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What report.json records of a shard run (`shard`), so `report merge` can
/// check the parts make one whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// 1-based, as given to `--shard`.
    pub index: usize,
    pub count: usize,
    /// The concepts this shard judged.
    pub concepts: Vec<String>,
    /// Every concept of the suite, over all shards, sorted.
    pub suite_concepts: Vec<String>,
    /// Monitors of the whole suite (the correction for many monitors is
    /// shared over all of them, not over one shard's).
    pub suite_monitors: usize,
}

/// Concepts dealt to `count` shards by labeled examples; input is
/// (concept, test examples) per concept, in any order. Returns, per shard,
/// its concepts sorted by name.
pub fn partition(concepts: &[(String, usize)], count: usize) -> Vec<Vec<String>> {
    let mut order: Vec<&(String, usize)> = concepts.iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut shards: Vec<(usize, Vec<String>)> = vec![(0, Vec::new()); count.max(1)];
    for (name, n) in order {
        let lightest = (0..shards.len())
            .min_by_key(|&i| (shards[i].0, i))
            .unwrap_or(0);
        shards[lightest].0 += n;
        shards[lightest].1.push(name.clone());
    }
    shards
        .into_iter()
        .map(|(_, mut c)| {
            c.sort();
            c
        })
        .collect()
}

/// A shard's part of the policy's `budget` examples, in proportion to the
/// labeled examples it holds (rounded down, so the parts never add up past
/// the whole).
pub fn budget_share(budget: usize, shard_examples: usize, suite_examples: usize) -> usize {
    if suite_examples == 0 {
        return 0;
    }
    let share = budget as u128 * shard_examples as u128 / suite_examples as u128;
    share.min(budget as u128) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(sizes: &[(&str, usize)]) -> Vec<(String, usize)> {
        sizes.iter().map(|(c, n)| (c.to_string(), *n)).collect()
    }

    #[test]
    fn shards_parse_as_ci_matrices_count_them() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(" 1 / 1 ".parse(), Ok(Shard { index: 1, count: 1 }));
        for bad in [
            "0/3", "4/3", "1/0", "a/b", "3", "", "1/2/3", "-1/2", "1/1000",
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("is not I/N"), "{bad}: {e}");
        }
        assert_eq!(Shard { index: 3, count: 5 }.to_string(), "3/5");
    }

    #[test]
    fn every_concept_lands_in_exactly_one_shard_whatever_the_input_order() {
        let s = suite(&[
            ("privacy_pii", 180),
            ("refusal_compliance", 120),
            ("harmful_request", 180),
            ("prompt_injection", 180),
            ("toxicity", 180),
            ("self_harm", 180),
        ]);
        for n in 1..=8 {
            let parts = partition(&s, n);
            assert_eq!(parts.len(), n);
            let mut all: Vec<String> = parts.concat();
            all.sort();
            let mut want: Vec<String> = s.iter().map(|(c, _)| c.clone()).collect();
            want.sort();
            assert_eq!(all, want, "{n} shards");
            let mut rev = s.clone();
            rev.reverse();
            assert_eq!(partition(&rev, n), parts, "order-independent at {n}");
        }
    }

    #[test]
    fn the_largest_test_sets_are_spread_first() {
        let s = suite(&[("a", 100), ("b", 90), ("c", 50), ("d", 40), ("e", 10)]);
        let parts = partition(&s, 2);
        // 100 → 0; 90 → 1; 50 → 1 (90 < 100); 40 → 0 (100 < 140); 10 → 0 (140 = 140, lower index).
        assert_eq!(parts[0], ["a", "d", "e"]);
        assert_eq!(parts[1], ["b", "c"]);
        // More shards than concepts: the extra ones are empty (the gate refuses to run them).
        let parts = partition(&s, 7);
        assert_eq!(parts.iter().filter(|p| p.is_empty()).count(), 2);
    }

    #[test]
    fn budget_shares_never_add_up_past_the_budget() {
        let sizes = [180usize, 120, 180, 180, 180, 180];
        let total: usize = sizes.iter().sum();
        for budget in [0, 1, 7, 600, 719, 720, 10_000] {
            let sum: usize = sizes.iter().map(|&n| budget_share(budget, n, total)).sum();
            assert!(sum <= budget, "{budget}: {sum}");
            // Rounding loses at most one example per shard.
            assert!(sum + sizes.len() > budget || budget == 0, "{budget}: {sum}");
        }
        assert_eq!(budget_share(600, 0, 0), 0);
        assert_eq!(budget_share(usize::MAX, 1, 1), usize::MAX);
    }
}
