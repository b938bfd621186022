//! PostgreSQL snapshots (`pg_snapshot`: `xmin:xmax:xip,...`) as positions in the stream of
//! committed changes, and the event ids made of them.
//!
//! A history row's id comes from a sequence, drawn when the row is inserted; rows commit in
//! another order (two writers take 10 and 11, and 11 commits first). A reader that resumed "after
//! id 11" would never see 10. A snapshot says exactly which transactions' rows a reader has seen,
//! whatever order they committed in: a row is new to it when the snapshot does not show the
//! row's transaction (`xid`).

use std::fmt;

/// Which transactions' changes are visible: all below `xmin`, none from `xmax` on, and between
/// them all but `in_progress`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    xmin: u64,
    xmax: u64,
    /// Sorted, each in `xmin..xmax`.
    in_progress: Vec<u64>,
}

/// Transactions in progress a snapshot may list at most (bounds what an event id may carry).
const MAX_IN_PROGRESS: usize = 1024;

impl Snapshot {
    /// Shows nothing: every change is new to it.
    pub fn nothing() -> Self {
        Self {
            xmin: 1,
            xmax: 1,
            in_progress: Vec::new(),
        }
    }

    /// `pg_snapshot`'s text form, and nothing else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let (xmin, xmax, list) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let number = |digits: &str| -> Option<u64> {
            if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            digits.parse().ok()
        };
        let (xmin, xmax) = (number(xmin)?, number(xmax)?);
        let in_progress = if list.is_empty() {
            Vec::new()
        } else {
            list.split(',').map(number).collect::<Option<Vec<_>>>()?
        };
        let sorted = in_progress.windows(2).all(|pair| pair[0] < pair[1]);
        let within = in_progress.iter().all(|xid| (xmin..xmax).contains(xid));
        (xmin >= 1 && xmin <= xmax && sorted && within && in_progress.len() <= MAX_IN_PROGRESS)
            .then_some(Self {
                xmin,
                xmax,
                in_progress,
            })
    }

    pub fn xmin(&self) -> u64 {
        self.xmin
    }

    /// Whether the changes of transaction `xid` are visible in this snapshot.
    pub fn shows(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && self.in_progress.binary_search(&xid).is_err())
    }

    /// The snapshot that shows what either shows.
    pub fn union(&self, other: &Self) -> Self {
        let xmax = self.xmax.max(other.xmax);
        let mut in_progress: Vec<u64> = self
            .in_progress
            .iter()
            .chain(&other.in_progress)
            .copied()
            .filter(|&xid| !self.shows(xid) && !other.shows(xid))
            .collect();
        // Complete: a transaction below `xmax` that neither shows is in the list of the one
        // with the higher `xmax` (it shows everything below its own `xmin`).
        in_progress.sort_unstable();
        in_progress.dedup();
        let xmin = in_progress.first().copied().unwrap_or(xmax);
        Self {
            xmin,
            xmax,
            in_progress,
        }
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (index, xid) in self.in_progress.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{xid}")?;
        }
        Ok(())
    }
}

/// An event id: what a client has seen. Every change visible in `seen`, and, within a batch
/// being sent, the changes visible in `batch` up to history id `through` (a batch's changes go
/// out in id order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub seen: Snapshot,
    pub partial: Option<(Snapshot, i64)>,
}

impl Cursor {
    pub fn at(seen: Snapshot) -> Self {
        Self {
            seen,
            partial: None,
        }
    }

    /// [`Cursor`]'s text (`seen` or `seen~batch~through`), and nothing else.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('~');
        let seen = Snapshot::parse(parts.next()?)?;
        let partial = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => None,
            (Some(batch), Some(through), None) => {
                let through = through.parse::<i64>().ok().filter(|id| *id >= 0)?;
                Some((Snapshot::parse(batch)?, through))
            }
            _ => return None,
        };
        Some(Self { seen, partial })
    }

    /// Whether the client has the change with history id `id`, written by transaction `xid`.
    pub fn has(&self, id: i64, xid: u64) -> bool {
        self.seen.shows(xid)
            || self
                .partial
                .as_ref()
                .is_some_and(|(batch, through)| batch.shows(xid) && id <= *through)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.seen)?;
        if let Some((batch, through)) = &self.partial {
            write!(f, "~{batch}~{through}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(text: &str) -> Snapshot {
        Snapshot::parse(text).unwrap()
    }

    #[test]
    fn snapshots_round_trip_through_their_text_and_refuse_anything_else() {
        for text in ["10:20:", "10:20:10,14,15", "1:1:"] {
            assert_eq!(snapshot(text).to_string(), text);
        }
        for bad in [
            "",
            "10:20",
            "10:20:15,14",
            "10:20:9",
            "10:20:20",
            "20:10:",
            "a:b:",
            "10:20:,",
            "10:20:1x",
            "0:0:",
            "10:20:14:1",
            "-1:2:",
        ] {
            assert_eq!(Snapshot::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_snapshot_shows_what_committed_before_it() {
        let s = snapshot("10:20:12,15");
        for xid in [1, 9, 10, 11, 13, 19] {
            assert!(s.shows(xid), "{xid}");
        }
        for xid in [12, 15, 20, 25] {
            assert!(!s.shows(xid), "{xid}");
        }
        assert!(!Snapshot::nothing().shows(3));
    }

    #[test]
    fn a_union_shows_exactly_what_either_shows() {
        let cases = [
            ("10:20:12,15", "12:25:12,22"),
            ("10:20:12,15", "10:20:"),
            ("1:1:", "30:40:31"),
            ("5:9:5,6,7", "6:12:6,11"),
        ];
        for (a, b) in cases {
            let (a, b) = (snapshot(a), snapshot(b));
            let union = a.union(&b);
            for xid in 1..50 {
                assert_eq!(
                    union.shows(xid),
                    a.shows(xid) || b.shows(xid),
                    "{a} | {b} at {xid}"
                );
            }
            assert_eq!(Snapshot::parse(&union.to_string()), Some(union));
        }
    }

    #[test]
    fn cursors_round_trip_and_say_what_the_client_has() {
        let cursor = Cursor {
            seen: snapshot("10:20:12"),
            partial: Some((snapshot("12:30:"), 7)),
        };
        assert_eq!(cursor.to_string(), "10:20:12~12:30:~7");
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor.clone()));
        assert!(cursor.has(100, 11), "seen");
        assert!(cursor.has(7, 25), "in the batch, up to 7");
        assert!(!cursor.has(8, 25), "in the batch, after 7");
        assert!(!cursor.has(1, 31), "in neither");
        for bad in [
            "10:20:~",
            "10:20:~12:30:",
            "10:20:~12:30:~-1",
            "x",
            "10:20:~12:30:~1~2",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }
}
