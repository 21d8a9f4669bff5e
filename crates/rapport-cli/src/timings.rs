//! `--timings`: how long each phase of a command took, printed on stderr.

use std::time::Duration;

#[derive(Default)]
pub(crate) struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    pub(crate) fn add(&mut self, phase: &'static str, d: Duration) {
        self.0.push((phase, d));
    }

    pub(crate) fn print(&self) {
        for (phase, d) in &self.0 {
            eprintln!("{phase:>12}: {:>9.2} ms", d.as_secs_f64() * 1000.0);
        }
    }
}
