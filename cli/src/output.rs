//! Standard output and standard error, for every line the program prints.
//!
//! A reader that went away (`devmapc check 2>&1 | head -1`) is not a
//! failure of the command: what it would have read is dropped and the
//! command goes on, so that its exit code still says what it found (1 for
//! a spec with errors, or for drift under `status | head`). Any other
//! failure to write is an I/O error: reported once, it makes the exit code 2.
//! (Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE; the
//! default action would kill the process with status 141 and lose the
//! command's own code.)

use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a line goes, and what became of that stream.
pub struct Stream {
    /// The reader went away: later lines are dropped.
    closed: AtomicBool,
    /// A write failed for another reason.
    failed: AtomicBool,
}

pub static STDOUT: Stream = Stream::new();
pub static STDERR: Stream = Stream::new();

impl Stream {
    const fn new() -> Stream {
        Stream { closed: AtomicBool::new(false), failed: AtomicBool::new(false) }
    }

    /// Writes `text` and a newline to `to`. Returns the error of a write
    /// that failed for another reason than a closed pipe (the first only).
    pub fn line(&self, to: &mut dyn Write, text: &str) -> Option<std::io::Error> {
        if self.closed.load(Ordering::Relaxed) {
            return None;
        }
        let result =
            to.write_all(text.as_bytes()).and_then(|()| to.write_all(b"\n")).and_then(|()| to.flush());
        match result {
            Ok(()) => None,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed.store(true, Ordering::Relaxed);
                None
            }
            Err(e) => (!self.failed.swap(true, Ordering::Relaxed)).then_some(e),
        }
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Prints a line on standard output.
pub fn out(text: &str) {
    if let Some(e) = STDOUT.line(&mut std::io::stdout().lock(), text) {
        err(&format!("error: cannot write to standard output: {e}"));
    }
}

/// Prints a line on standard error (where else could its failure go).
pub fn err(text: &str) {
    let _ = STDERR.line(&mut std::io::stderr().lock(), text);
}

/// The command's exit code, unless printing failed (2, an I/O error). A
/// closed pipe changes nothing.
pub fn exit_code(command: ExitCode) -> ExitCode {
    if any_failed(&[&STDOUT, &STDERR]) {
        ExitCode::from(2)
    } else {
        command
    }
}

fn any_failed(streams: &[&Stream]) -> bool {
    streams.iter().any(|s| s.failed())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away after `room` bytes, or that fails
    /// with `kind`.
    struct Pipe {
        taken: Vec<u8>,
        room: usize,
        kind: ErrorKind,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.taken.len() >= self.room {
                return Err(std::io::Error::from(self.kind));
            }
            let n = buf.len().min(self.room - self.taken.len());
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_drops_the_rest_and_keeps_the_exit_code() {
        let stream = Stream::new();
        let mut pipe = Pipe { taken: Vec::new(), room: 6, kind: ErrorKind::BrokenPipe };
        for line in ["drift: 3 entries", "route 10 -> red", "route 11 -> blue"] {
            assert!(stream.line(&mut pipe, line).is_none());
        }
        assert_eq!(pipe.taken, b"drift:");
        // `status` found drift: its exit code 1 stands, though nobody read
        // the report.
        assert!(!any_failed(&[&stream]));
    }

    #[test]
    fn another_write_error_is_reported_once_and_is_exit_2() {
        let stream = Stream::new();
        let mut full = Pipe { taken: Vec::new(), room: 0, kind: ErrorKind::StorageFull };
        assert!(stream.line(&mut full, "wrote x").is_some());
        assert!(stream.line(&mut full, "wrote y").is_none(), "reported once");
        assert!(any_failed(&[&stream]));
    }
}
