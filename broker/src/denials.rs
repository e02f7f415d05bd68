//! Denied requests (401, 403) in the audit log, aggregated per source so that they cannot flood it.
//!
//! Every denial is accounted for, but a client that is refused over and over does not cost one
//! synchronous database write per request: the first denial of a source (address and principal)
//! in a [`WINDOW`] gets an `access.denied` entry of its own, and the denials that follow it in
//! that window are counted into one `access.denied.repeated` entry, written when the window has
//! passed (at the source's next denial, at any other denial, or at shutdown) with the count and
//! a few sample paths. What an entry records from the request is capped: a path at
//! [`MAX_PATH_CHARS`] characters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long one `access.denied` entry stands for a source's later denials.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Characters of a request path an entry keeps.
pub const MAX_PATH_CHARS: usize = 200;
/// Sample paths kept per window.
const SAMPLE_PATHS: usize = 8;
/// Sources tracked at once; past this, new sources share one key (so memory stays bounded).
const MAX_SOURCES: usize = 4096;

/// Who was denied: the address and the principal (`anonymous` without a valid token).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Source {
    /// The client's address, if known.
    pub address: Option<IpAddr>,
    /// The principal, or `anonymous`.
    pub principal: String,
}

/// What to do with one denial.
#[derive(Debug, PartialEq)]
pub enum Note {
    /// The first in its window: record it as an entry of its own.
    Record,
    /// Counted into the window's summary.
    Counted,
}

/// Denials counted after a window's first, to be recorded as one entry.
#[derive(Debug, PartialEq)]
pub struct Repeated {
    /// Whose.
    pub source: Source,
    /// How many.
    pub count: u64,
    /// Up to eight distinct paths among them.
    pub sample_paths: Vec<String>,
    /// How long the window was.
    pub window_secs: u64,
}

struct Window {
    started: Instant,
    count: u64,
    sample_paths: Vec<String>,
}

/// Open windows, one per source.
#[derive(Default)]
pub struct DenialLog {
    windows: HashMap<Source, Window>,
}

impl DenialLog {
    /// Notes one denial of `source` for `path` at `now`.
    pub fn note(&mut self, mut source: Source, path: &str, now: Instant) -> Note {
        if self.windows.len() >= MAX_SOURCES && !self.windows.contains_key(&source) {
            source = Source {
                address: None,
                principal: "(many sources)".into(),
            };
        }
        match self.windows.get_mut(&source) {
            Some(w) if now.duration_since(w.started) < WINDOW => {
                w.count += 1;
                let path = capped_path(path);
                if w.sample_paths.len() < SAMPLE_PATHS && !w.sample_paths.contains(&path) {
                    w.sample_paths.push(path);
                }
                Note::Counted
            }
            _ => {
                // An expired window of this source is summarised by `expired` first.
                self.windows.insert(
                    source,
                    Window {
                        started: now,
                        count: 0,
                        sample_paths: Vec::new(),
                    },
                );
                Note::Record
            }
        }
    }

    /// Takes the windows that have passed by `now` (all of them with `all`), returning those
    /// with repeated denials to record.
    pub fn expired(&mut self, now: Instant, all: bool) -> Vec<Repeated> {
        let done: Vec<Source> = self
            .windows
            .iter()
            .filter(|(_, w)| all || now.duration_since(w.started) >= WINDOW)
            .map(|(s, _)| s.clone())
            .collect();
        let mut out: Vec<Repeated> = done
            .into_iter()
            .filter_map(|s| {
                let w = self.windows.remove(&s)?;
                (w.count > 0).then_some(Repeated {
                    source: s,
                    count: w.count,
                    sample_paths: w.sample_paths,
                    window_secs: WINDOW.as_secs(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.source.principal.cmp(&b.source.principal));
        out
    }
}

/// `path` cut to [`MAX_PATH_CHARS`] characters (marked with `…` when cut).
pub fn capped_path(path: &str) -> String {
    let mut chars = path.chars();
    let kept: String = chars.by_ref().take(MAX_PATH_CHARS).collect();
    if chars.next().is_some() {
        kept + "…"
    } else {
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(ip: &str) -> Source {
        Source {
            address: Some(ip.parse().unwrap()),
            principal: "anonymous".into(),
        }
    }

    #[test]
    fn one_entry_per_source_per_window_and_a_count_for_the_rest() {
        let mut log = DenialLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note(anon("10.0.0.1"), "/v1/jobs", t0), Note::Record);
        for i in 0..500 {
            assert_eq!(
                log.note(anon("10.0.0.1"), &format!("/v1/x{}", i % 20), t0),
                Note::Counted
            );
        }
        assert_eq!(log.note(anon("10.0.0.2"), "/", t0), Note::Record);
        assert!(log.expired(t0 + Duration::from_secs(1), false).is_empty());
        let later = t0 + WINDOW;
        let repeated = log.expired(later, false);
        assert_eq!(
            repeated.len(),
            1,
            "a window without repeats needs no summary"
        );
        assert_eq!(repeated[0].count, 500);
        assert_eq!(repeated[0].sample_paths.len(), 8);
        assert_eq!(log.note(anon("10.0.0.1"), "/", later), Note::Record);
        log.note(anon("10.0.0.1"), "/", later);
        assert_eq!(log.expired(later, true)[0].count, 1, "shutdown takes all");
    }

    #[test]
    fn paths_are_capped_and_sources_are_bounded() {
        let long = "/".repeat(64 << 10);
        assert_eq!(capped_path(&long).chars().count(), MAX_PATH_CHARS + 1);
        assert_eq!(capped_path("/v1/jobs"), "/v1/jobs");
        let mut log = DenialLog::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(i);
            log.note(anon(&ip.to_string()), "/", t0);
        }
        assert!(log.windows.len() <= MAX_SOURCES + 1);
    }
}
