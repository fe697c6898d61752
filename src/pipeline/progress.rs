//! Progress and events. On a terminal: one bar per stage on stderr (bytes, bytes/s, ETA).
//! Otherwise: a plain line when a stage starts and ends and every ten seconds in between.
//! With `--json`: one JSON event per line on stdout (`stage_started`, `unit_done`,
//! `stage_finished`, `verdict`, `finished`), human lines still on stderr.

use crate::size::human;
use serde_json::{json, Value as Json};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const PLAIN_EVERY: Duration = Duration::from_secs(10);
const TTY_EVERY: Duration = Duration::from_millis(100);

struct Stage {
    label: String,
    total: Option<u64>,
    done: u64,
    /// Bytes skipped because a previous run completed them (not counted in the rate).
    skipped: u64,
    start: Instant,
    last_draw: Instant,
}

pub struct Events {
    tty: bool,
    json: bool,
    stage: Option<Stage>,
}

impl Events {
    pub fn new(json: bool) -> Events {
        Events { tty: std::io::stderr().is_terminal(), json, stage: None }
    }

    fn emit(&self, v: Json) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{v}");
            let _ = out.flush();
        }
    }

    fn clear_bar(&self) {
        if self.tty && self.stage.is_some() {
            eprint!("\r\x1b[K");
        }
    }

    /// A line for people (stderr), above the bar if there is one.
    pub fn say(&mut self, text: &str) {
        self.clear_bar();
        eprintln!("{text}");
        self.draw(true);
    }

    pub fn stage_start(&mut self, stage: &str, target: Option<&str>, total: Option<u64>) {
        self.emit(json!({"event": "stage_started", "stage": stage, "target": target, "bytes": total}));
        let label = match target {
            Some(t) => format!("{stage} {t}"),
            None => stage.to_string(),
        };
        let now = Instant::now();
        if !self.tty {
            match total {
                Some(b) => eprintln!("{label}: started ({})", human(b)),
                None => eprintln!("{label}: started"),
            }
        }
        self.stage = Some(Stage { label, total, done: 0, skipped: 0, start: now, last_draw: now });
        self.draw(true);
    }

    /// `bytes` more of the stage are done (`skipped`: done by an earlier run).
    pub fn advance(&mut self, bytes: u64, skipped: bool) {
        if let Some(s) = &mut self.stage {
            s.done += bytes;
            if skipped {
                s.skipped += bytes;
            }
        }
        self.draw(false);
    }

    pub fn unit_done(&mut self, unit: &str, bytes: u64, skipped: bool) {
        self.emit(json!({"event": "unit_done", "unit": unit, "bytes": bytes, "skipped": skipped}));
    }

    pub fn stage_end(&mut self, outcome: &str) {
        let Some(s) = self.stage.take() else { return };
        let secs = s.start.elapsed().as_secs_f64();
        self.emit(json!({"event": "stage_finished", "stage": s.label, "seconds": secs, "outcome": outcome}));
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!("{}: {outcome} ({secs:.1}s)", s.label);
    }

    pub fn verdict(&mut self, v: Json) {
        self.emit(json!({"event": "verdict", "verdict": v}));
    }

    pub fn finished(&mut self, exit: u8, summary: Json) {
        self.emit(json!({"event": "finished", "exit_code": exit, "summary": summary}));
    }

    fn draw(&mut self, force: bool) {
        let tty = self.tty;
        let Some(s) = &mut self.stage else { return };
        let now = Instant::now();
        let every = if tty { TTY_EVERY } else { PLAIN_EVERY };
        if !force && now.duration_since(s.last_draw) < every {
            return;
        }
        if !tty && force {
            return; // plain mode prints start/end lines itself; periodic lines only
        }
        s.last_draw = now;
        let secs = now.duration_since(s.start).as_secs_f64().max(1e-9);
        let rate = (s.done - s.skipped) as f64 / secs;
        let line = if let Some(total) = s.total.filter(|&t| t > 0) {
            let frac = (s.done as f64 / total as f64).min(1.0);
            let width = 24;
            let full = (frac * width as f64).round() as usize;
            let mut line = format!(
                "{}  [{}{}] {:>5.1}%  {} / {}",
                s.label,
                "#".repeat(full),
                "-".repeat(width - full),
                frac * 100.0,
                human(s.done),
                human(total)
            );
            if rate > 0.0 && s.done < total {
                line += &format!("  {}/s  ETA {}", human(rate as u64), eta((total - s.done) as f64 / rate));
            }
            line
        } else {
            // No byte count (engine stages): how long it has been running.
            format!("{}  running {:.0}s", s.label, secs)
        };
        if tty {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

fn eta(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
