//! (I/O: files) Reading one instance's byte range of its log file as `kubectl logs` asks for
//! it, and the response body streaming it.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{lock, Instance, LogOptions};

/// How long a follower waits for new bytes before looking again.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const CHUNK: usize = 64 * 1024;

/// What one read step produced.
#[derive(Debug, PartialEq)]
pub enum Step {
    Data(Vec<u8>),
    /// Following and at the end of a running instance: look again later.
    Wait,
    Done,
}

/// Reads one instance's range of the log file, line by line (timestamps, `since`), with
/// `tailLines` applied first and `limitBytes` last, as the kubelet does.
pub struct LogReader {
    inst: Arc<Instance>,
    file: std::fs::File,
    opts: LogOptions,
    /// Next byte of the file to read.
    pos: u64,
    /// A line read but not yet terminated, starting at `pos - pending.len()`.
    pending: Vec<u8>,
    /// Without `follow`: the end of the range at the time of the request.
    snapshot_end: Option<u64>,
    remaining: Option<u64>,
    done: bool,
}

impl LogReader {
    pub fn open(inst: Arc<Instance>, opts: LogOptions) -> std::io::Result<Self> {
        let file = std::fs::File::open(&inst.path)?;
        let len = file.metadata()?.len();
        let end = inst.end().unwrap_or(len).min(len);
        let mut pos = inst.start.min(end);
        if let Some(n) = opts.tail_lines {
            pos = tail_start(&file, pos, end, n)?;
        }
        Ok(LogReader {
            snapshot_end: (!opts.follow).then_some(end),
            remaining: opts.limit_bytes,
            file,
            opts,
            pos,
            pending: Vec::new(),
            done: false,
            inst,
        })
    }

    /// Reads until there is output, nothing more to wait for, or (following) nothing new yet.
    pub fn step(&mut self) -> std::io::Result<Step> {
        if self.done {
            return Ok(Step::Done);
        }
        let mut out = Vec::new();
        loop {
            let ended = self.inst.end();
            let upto = match self.snapshot_end {
                Some(s) => s,
                None => {
                    let len = self.file.metadata()?.len();
                    ended.map_or(len, |e| e.min(len))
                }
            };
            let last = self.snapshot_end.is_some() || ended.is_some();
            if self.pos < upto {
                let want = usize::try_from(upto - self.pos).unwrap_or(CHUNK).min(CHUNK);
                let mut buf = vec![0; want];
                let n = self.file.read_at(&mut buf, self.pos)?;
                if n == 0 {
                    // The file shrank under us (removed or truncated by hand): stop.
                    self.done = true;
                } else {
                    buf.truncate(n);
                    self.pos += n as u64;
                    self.pending.extend_from_slice(&buf);
                }
                if self.opts.timestamps || self.opts.since.is_some() {
                    self.inst.observe(upto, Timestamp::now());
                }
                let flush = self.done || (last && self.pos >= upto);
                self.emit(&mut out, flush);
            } else {
                self.emit(&mut out, last);
                if last {
                    self.done = true;
                }
            }
            if let Some(rem) = self.remaining.as_mut() {
                let take = usize::try_from(*rem).unwrap_or(usize::MAX).min(out.len());
                out.truncate(take);
                *rem -= take as u64;
                if *rem == 0 {
                    self.done = true;
                }
            }
            if !out.is_empty() {
                return Ok(Step::Data(out));
            }
            if self.done {
                return Ok(Step::Done);
            }
            if self.pos >= upto {
                return Ok(Step::Wait);
            }
        }
    }

    /// Moves the complete lines of `pending` (and the partial last one when `flush`) to `out`.
    fn emit(&mut self, out: &mut Vec<u8>, flush: bool) {
        let base = self.pos - self.pending.len() as u64;
        let complete = self
            .pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let upto = if flush { self.pending.len() } else { complete };
        if upto == 0 {
            return;
        }
        if !self.opts.timestamps && self.opts.since.is_none() {
            out.extend_from_slice(&self.pending[..upto]);
        } else {
            let inner = lock(&self.inst.inner);
            let now = Timestamp::now();
            let mut at = 0;
            while at < upto {
                let end = self.pending[at..upto]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(upto, |i| at + i + 1);
                let t = Instance::time_of(&inner, base + end as u64, now);
                if self.opts.since.is_none_or(|s| t >= s) {
                    if self.opts.timestamps {
                        out.extend_from_slice(format!("{t} ").as_bytes());
                    }
                    out.extend_from_slice(&self.pending[at..end]);
                }
                at = end;
            }
        }
        self.pending.drain(..upto);
    }
}

/// Where the last `n` lines of `[start, end)` begin (a last line without newline counts).
fn tail_start(file: &std::fs::File, start: u64, end: u64, n: u64) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(end);
    }
    let mut newlines = 0;
    let mut at = end;
    let mut first = true;
    while at > start {
        let size = usize::try_from(at - start).unwrap_or(CHUNK).min(CHUNK);
        let from = at - size as u64;
        let mut buf = vec![0; size];
        file.read_exact_at(&mut buf, from)?;
        let mut slice = &buf[..];
        if first {
            // The final newline ends the last line; it does not start another.
            if slice.last() == Some(&b'\n') {
                slice = &slice[..slice.len() - 1];
            }
            first = false;
        }
        for (i, &b) in slice.iter().enumerate().rev() {
            if b == b'\n' {
                newlines += 1;
                if newlines == n {
                    return Ok(from + i as u64 + 1);
                }
            }
        }
        at = from;
    }
    Ok(start)
}

/// The instance's log as a body stream: blocking reads off the runtime threads, and while
/// following, a look every [`FOLLOW_POLL`] until the run ends or the client goes away (the
/// stream is dropped).
pub fn stream(
    reader: LogReader,
) -> impl futures::Stream<Item = std::io::Result<axum::body::Bytes>> + Send {
    futures::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        loop {
            let joined = tokio::task::spawn_blocking(move || {
                let step = reader.step();
                (reader, step)
            })
            .await;
            let (r, step) = match joined {
                Ok(x) => x,
                Err(e) => return Some((Err(std::io::Error::other(e)), None)),
            };
            reader = r;
            match step {
                Ok(Step::Data(b)) => return Some((Ok(b.into()), Some(reader))),
                Ok(Step::Wait) => tokio::time::sleep(FOLLOW_POLL).await,
                Ok(Step::Done) => return None,
                Err(e) => return Some((Err(e), None)),
            }
        }
    })
}
