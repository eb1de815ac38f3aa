//! Progress reporting of long analyses: stages with a known amount of work, then units done.
//! The command layer draws them (indicatif on stderr); the library only calls them.

/// Progress callbacks: `stage(name, total)` when a stage starts, then `inc(units)`.
pub trait Progress: Sync {
    fn stage(&self, name: &str, total: u64);
    fn inc(&self, n: u64);
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: u64) {}
    fn inc(&self, _: u64) {}
}

/// Names every stage of an inner [`Progress`] with a prefix (e.g. the model's name).
pub struct Prefixed<'a> {
    pub prefix: String,
    pub inner: &'a dyn Progress,
}

impl Progress for Prefixed<'_> {
    fn stage(&self, name: &str, total: u64) {
        self.inner.stage(&format!("{}: {name}", self.prefix), total);
    }
    fn inc(&self, n: u64) {
        self.inner.inc(n);
    }
}
