//! A set of u64 offsets kept as disjoint half-open ranges: acknowledgements
//! mostly arrive in order, so the set stays a handful of ranges.

use std::collections::BTreeMap;

/// A set of offsets as disjoint half-open ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end (exclusive); ranges never touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Adds one offset.
    pub fn insert(&mut self, offset: u64) {
        self.insert_range(offset, offset + 1);
    }

    /// Adds `[start, end)`, merging with ranges it touches; nothing if `start >= end`.
    pub fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with a range that starts before and reaches `start`.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        // Swallow ranges starting inside [start, end].
        let inside: Vec<(u64, u64)> = self.ranges.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Whether `offset` is in the set.
    pub fn contains(&self, offset: u64) -> bool {
        self.ranges.range(..=offset).next_back().is_some_and(|(_, &e)| offset < e)
    }

    /// Removes everything below `floor`.
    pub fn remove_below(&mut self, floor: u64) {
        while let Some((&s, &e)) = self.ranges.first_key_value() {
            if s >= floor {
                break;
            }
            self.ranges.remove(&s);
            if e > floor {
                self.ranges.insert(floor, e);
                break;
            }
        }
    }

    /// If a range starts at `floor`, removes it and returns its end (the new
    /// floor); otherwise returns `floor`.
    pub fn advance(&mut self, floor: u64) -> u64 {
        match self.ranges.first_key_value() {
            Some((&s, &e)) if s <= floor => {
                self.ranges.remove(&s);
                e.max(floor)
            }
            _ => floor,
        }
    }

    /// How many offsets at or above `from` are in the set.
    pub fn count_from(&self, from: u64) -> u64 {
        let mut n = 0;
        if let Some((_, &e)) = self.ranges.range(..from).next_back()
            && e > from
        {
            n += e - from;
        }
        n + self.ranges.range(from..).map(|(&s, &e)| e - s).sum::<u64>()
    }

    /// The ranges as `[start, end)` pairs, ascending.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|(&s, &e)| (s, e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_advances() {
        let mut r = RangeSet::default();
        for o in [5, 3, 4, 10, 8, 9] {
            r.insert(o);
        }
        assert_eq!(r.ranges(), vec![(3, 6), (8, 11)]);
        assert!(r.contains(4) && !r.contains(6) && r.contains(10) && !r.contains(11));
        assert_eq!(r.count_from(4), 2 + 3);
        assert_eq!(r.advance(2), 2);
        assert_eq!(r.advance(3), 6);
        r.insert_range(6, 8);
        assert_eq!(r.ranges(), vec![(6, 11)]);
        r.remove_below(7);
        assert_eq!(r.ranges(), vec![(7, 11)]);
        r.insert_range(0, 100);
        assert_eq!(r.ranges(), vec![(0, 100)]);
    }

    proptest::proptest! {
        /// Against a plain set: membership, counts, and the floor advancing
        /// exactly over contiguous acknowledged offsets.
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((0u64..200, 1u64..8, 0u8..4), 0..200)) {
            let mut r = RangeSet::default();
            let mut model = std::collections::BTreeSet::new();
            let mut floor = 0u64;
            for (at, len, op) in ops {
                match op {
                    0 => { r.insert(at); model.insert(at); }
                    1 => { r.insert_range(at, at + len); model.extend(at..at + len); }
                    2 => {
                        r.remove_below(at);
                        model.retain(|&x| x >= at);
                    }
                    _ => {
                        let new = r.advance(floor);
                        let mut expect = floor;
                        if model.first().is_some_and(|&f| f <= floor) {
                            let first = *model.first().unwrap_or(&floor);
                            let mut end = first;
                            while model.contains(&end) { end += 1; }
                            expect = end.max(floor);
                            model.retain(|&x| x >= end);
                            model.retain(|&x| x < first || x >= end);
                        }
                        proptest::prop_assert_eq!(new, expect);
                        floor = new;
                    }
                }
                for x in 0..220 {
                    proptest::prop_assert_eq!(r.contains(x), model.contains(&x), "offset {}", x);
                }
                proptest::prop_assert_eq!(r.count_from(50), model.range(50..).count() as u64);
            }
        }
    }
}
