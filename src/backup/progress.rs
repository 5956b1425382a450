//! A one-line progress display on stderr, for terminals only: files, bytes, rate and, when the previous snapshot
//! gives an estimate of the total, the time left.

use super::store::Counters;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Display {
    stop: Arc<AtomicBool>,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Display {
    pub fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        counters: &'scope Counters,
        estimate: Option<u64>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        scope.spawn(move || {
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                draw(counters, estimate, started.elapsed());
            }
            eprint!("\r\x1b[2K");
        });
        Self { stop }
    }
}

fn draw(c: &Counters, estimate: Option<u64>, elapsed: Duration) {
    let files = c.files.load(Ordering::Relaxed);
    let bytes = c.bytes_read.load(Ordering::Relaxed);
    let rate = bytes as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = match estimate {
        Some(total) if rate > 0.0 && total > bytes => {
            format!("  ETA {}s", ((total - bytes) as f64 / rate) as u64)
        }
        _ => String::new(),
    };
    let mib = |b: f64| b / (1024.0 * 1024.0);
    eprint!(
        "\r\x1b[2K{files} files  {:.1} MiB read  {:.1} MiB/s{eta}",
        mib(bytes as f64),
        mib(rate)
    );
    let _ = std::io::stderr().flush();
}
