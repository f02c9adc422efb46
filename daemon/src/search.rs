//! `nix search`, as the daemon serves it: from search indexes kept beside warm flakes and in the
//! eval cache on disk.
//!
//! The packages a search visits, and their names and descriptions, do not depend on its regular
//! expressions, so the first search over an installable's roots walks the flake once into an
//! [`eval::SearchIndex`]; the index is kept with the flake's warm entry (so it is dropped
//! exactly when the entry is: when the flake's files change or the entry is evicted) and
//! written to the flake's eval cache, where a restarted daemon finds it without evaluating.
//! Every search then only runs its regexes over an index.
//!
//! Invariants: an index is only answered from while its warm entry is fresh, or from the
//! database of the tree's current fingerprint; an index is written to disk only when the
//! flake's evaluation printed nothing beyond the warnings every open repeats (as for `eval`
//! answers), and its row decodes to exactly the index that was written, else it is a miss.

use std::sync::Arc;

use flaked_cache::{CachedValue, EvalCache, Lookup};
use flaked_eval::api as eval;
use flaked_proto::v1 as pb;
use tonic::Status;

use crate::evalcache::WARNINGS;
use crate::warm::WarmSet;

/// Reserved child of the root row holding the search indexes, one child per set of roots. No
/// Nix attribute name can start with a NUL byte.
const INDEXES: &str = "\0flaked-search-indexes";

/// Matches sent in one stream message (the first one carries them, the rest ride in `more`).
const BATCH: usize = 256;

/// What identifies the index of `nix search FLAKE#fragment`: its root attribute paths.
pub fn roots_key(fragment: &str, system: &str) -> String {
    eval::search_roots(fragment, system).join("\n")
}

/// The index of `roots` and the warnings to print with it, when `cache` holds both.
pub fn load(cache: &EvalCache, roots: &str) -> Option<(eval::SearchIndex, Vec<String>)> {
    let root = cache.root();
    let warnings = match cache.child(&root, WARNINGS) {
        Lookup::Hit(_, CachedValue::ListOfStrings(w)) => w,
        _ => return None,
    };
    let indexes = match cache.child(&root, INDEXES) {
        Lookup::Hit(c, _) => c,
        _ => return None,
    };
    match cache.child(&indexes, roots) {
        Lookup::Hit(_, CachedValue::String { value, .. }) => {
            let index = eval::SearchIndex::decode(&value);
            if index.is_none() {
                tracing::warn!(db = %cache.path().display(), "a search index in the eval cache does not decode; searching afresh");
            }
            Some((index?, warnings))
        }
        _ => None,
    }
}

/// Writes the index of `roots` to `cache` (committed in the background).
pub fn store(cache: &EvalCache, roots: &str, index: &eval::SearchIndex) {
    let root = cache.root();
    cache.set(&root, CachedValue::Placeholder);
    let indexes = cache.set_child(&root, INDEXES, CachedValue::Placeholder);
    cache.set_child(
        &indexes,
        roots,
        CachedValue::String {
            value: index.encode(),
            context: Vec::new(),
        },
    );
}

/// `nix search INSTALLABLE REGEX… [--exclude REGEX…]`: the matching packages in Nix's order,
/// and the warnings to print first. Blocking.
pub fn search(
    warm: &WarmSet,
    installable: &str,
    settings: &eval::EvalSettings,
    regexes: &[String],
    excludes: &[String],
) -> Result<(Vec<eval::SearchHit>, Vec<String>), eval::Diagnostic> {
    let query = eval::SearchQuery::new(regexes, excludes).map_err(eval::Diagnostic::plain)?;
    let (index, stderr): (Arc<eval::SearchIndex>, Vec<String>) =
        warm.search_index(installable, settings)?;
    Ok((index.query(&query), stderr))
}

/// The stream messages of a search's answer: the matches in batches (the first of each batch
/// carries the rest in `more`), the warnings on the first message (alone when nothing matched);
/// a failure is one message.
pub fn messages(
    out: Result<(Vec<eval::SearchHit>, Vec<String>), eval::Diagnostic>,
) -> Vec<Result<pb::SearchMatch, Status>> {
    let (hits, stderr) = match out {
        Ok(found) => found,
        Err(d) => {
            return vec![Ok(pb::SearchMatch {
                stderr: d.log.clone(),
                error: Some(crate::service::diagnostic(d)),
                ..Default::default()
            })];
        }
    };
    let mut stderr = Some(stderr);
    let mut out = Vec::with_capacity(hits.len() / BATCH + 1);
    let mut hits = hits.into_iter().map(|h| pb::SearchMatch {
        attr_path: h.attr_path,
        pname: h.pname,
        version: h.version,
        description: h.description,
        error: None,
        rendered: h.rendered,
        stderr: Vec::new(),
        more: Vec::new(),
    });
    while let Some(mut first) = hits.next() {
        first.stderr = stderr.take().unwrap_or_default();
        first.more = hits.by_ref().take(BATCH - 1).collect();
        out.push(Ok(first));
    }
    if let Some(stderr) = stderr.filter(|s| !s.is_empty()) {
        // No match: the warnings alone (a message without `rendered` is no match).
        out.push(Ok(pb::SearchMatch {
            stderr,
            ..Default::default()
        }));
    }
    out
}
