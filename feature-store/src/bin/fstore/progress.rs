//! Progress of long verbs (backfills, exports, waiting for a ticket): a bar on stderr
//! when it is a terminal, else a plain line every few seconds (and one at the end), so
//! logs of scripted runs show progress too. stdout keeps only the verb's answer.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// One long piece of work, `done` of `total` (units of the caller's choosing).
pub struct Progress {
    what: String,
    total: u64,
    draw: Draw,
}

enum Draw {
    Bar(ProgressBar),
    Lines {
        last: Instant,
        done: u64,
        note: String,
    },
}

impl Progress {
    /// `what` names the work in plain lines (`backfill 01a2…`, `export`).
    pub fn new(what: impl Into<String>, total: u64) -> Self {
        let draw = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            Draw::Bar(bar)
        } else {
            Draw::Lines {
                last: Instant::now(),
                done: 0,
                note: String::new(),
            }
        };
        Progress {
            what: what.into(),
            total,
            draw,
        }
    }

    /// Sets where the work is, with a note (`3 failed, 40/s`).
    pub fn set(&mut self, done: u64, note: impl Into<String>) {
        let note = note.into();
        match &mut self.draw {
            Draw::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(note);
            }
            Draw::Lines {
                last,
                done: d,
                note: n,
            } => {
                *d = done;
                *n = note;
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    eprintln!("{}", line(&self.what, *d, self.total, n));
                }
            }
        }
    }

    /// Ends the bar (cleared: the verb prints its answer next) or prints the last line.
    pub fn finish(self) {
        match self.draw {
            Draw::Bar(bar) => bar.finish_and_clear(),
            Draw::Lines { done, note, .. } => {
                eprintln!("{}", line(&self.what, done, self.total, &note));
            }
        }
    }
}

fn line(what: &str, done: u64, total: u64, note: &str) -> String {
    let sep = if note.is_empty() { "" } else { ", " };
    format!("{what}: {done}/{total}{sep}{note}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_says_what_how_far_and_the_note() {
        assert_eq!(line("export", 3, 10, ""), "export: 3/10");
        assert_eq!(
            line("backfill b1", 40, 120, "2 failed"),
            "backfill b1: 40/120, 2 failed"
        );
    }
}
