//! Eval cache.
