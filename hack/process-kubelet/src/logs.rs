//! (I/O: files) Container logs as the kubelet API serves them (`GET /containerLogs/...`, what
//! `kubectl logs` reaches through the API server).
//!
//! A container's stdout and stderr go to one file, `<pod dir>/logs/<container>.log`, appended
//! across restarts (so the file also reads as the container's whole history). Each run of the
//! container is an [`Instance`]: the byte range it appended, from the file's length when it
//! started to its length when it ended. The kubelet picks the instance the way the real one
//! does, from the container's status: the running (or last terminated) one, or with
//! `previous=true` the one `lastState.terminated` names.
//!
//! Processes write straight to the file, so lines carry no timestamps. Each instance therefore
//! keeps a sparse index of (file length, time first seen) marks, sampled every
//! [`SAMPLE_EVERY`] while it runs (and whenever a reader reaches the end of the file): a line's
//! time is the first mark at or past its end, i.e. when the kubelet first saw it, at most one
//! sampling interval after it was written. `timestamps=true` prints that time and
//! `sinceSeconds`/`sinceTime` filter by it (best effort, to about a quarter of a second).
//!
//! The query parameters are read in `options`, an instance's range in `reader`; the HTTPS side
//! is `server.rs`.

mod options;
mod reader;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::status::{PodRt, State};

pub use options::LogOptions;
pub use reader::{stream, LogReader};

/// How often a running instance's log length is sampled for the time index.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Instances kept per container: the current one and the previous one, plus one spare.
const KEEP_INSTANCES: usize = 3;
/// Marks kept per instance; beyond, every other old mark is dropped (coarser old timestamps).
const MAX_MARKS: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The logs of every pod this kubelet runs, by namespace and name (the API server's path).
#[derive(Default)]
pub struct LogRegistry {
    pods: Mutex<HashMap<(String, String), Arc<PodLogs>>>,
}

impl LogRegistry {
    /// A newer pod of the same name replaces an older one still shutting down.
    pub fn register(&self, namespace: &str, name: &str, pod: Arc<PodLogs>) {
        lock(&self.pods).insert((namespace.to_owned(), name.to_owned()), pod);
    }

    /// Removes the pod's entry unless a newer pod of the same name took it over.
    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = lock(&self.pods);
        let key = (namespace.to_owned(), name.to_owned());
        if pods.get(&key).is_some_and(|p| p.uid == uid) {
            pods.remove(&key);
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodLogs>> {
        lock(&self.pods)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

/// Why no log can be served, with the kubelet's HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// 404: no such pod or container on this node.
    #[error("{0}")]
    NotFound(String),
    /// 400: the container has no such instance (not started yet, no previous run).
    #[error("{0}")]
    BadRequest(String),
    /// 422: invalid query parameters.
    #[error("{0}")]
    Invalid(String),
}

/// One pod's containers and their runs.
pub struct PodLogs {
    pub uid: String,
    name: String,
    log_dir: PathBuf,
    init: Vec<String>,
    main: Vec<String>,
    /// The runtime state the status is built from (main containers only).
    rt: watch::Receiver<PodRt>,
    instances: Mutex<HashMap<String, VecDeque<Arc<Instance>>>>,
}

impl PodLogs {
    pub fn new(
        uid: &str,
        name: &str,
        log_dir: PathBuf,
        init: Vec<String>,
        main: Vec<String>,
        rt: watch::Receiver<PodRt>,
    ) -> Self {
        PodLogs {
            uid: uid.to_owned(),
            name: name.to_owned(),
            log_dir,
            init,
            main,
            rt,
            instances: Mutex::new(HashMap::new()),
        }
    }

    pub fn log_path(&self, container: &str) -> PathBuf {
        self.log_dir.join(format!("{container}.log"))
    }

    /// Records a new run of `container` whose output starts at byte `start` of its log file.
    pub fn started(
        &self,
        container: &str,
        container_id: &str,
        start: u64,
        at: Timestamp,
    ) -> Arc<Instance> {
        let inst = Arc::new(Instance {
            container_id: container_id.to_owned(),
            path: self.log_path(container),
            start,
            inner: Mutex::new(InstanceInner {
                end: None,
                marks: Vec::new(),
            }),
        });
        // Output written before the first sample dates from the start at the earliest.
        inst.observe(start, at);
        let mut all = lock(&self.instances);
        let runs = all.entry(container.to_owned()).or_default();
        runs.push_back(inst.clone());
        while runs.len() > KEEP_INSTANCES {
            runs.pop_front();
        }
        inst
    }

    /// The run `kubectl logs [--previous]` means, chosen as the kubelet does from the
    /// container's status: `previous` is `lastState.terminated`; otherwise the running or
    /// terminated container, or while waiting (back-off) the last terminated one.
    pub fn select(&self, container: &str, previous: bool) -> Result<Arc<Instance>, LogError> {
        let pod = &self.name;
        let not_found_previous = || {
            LogError::BadRequest(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ))
        };
        let by_id = |id: &str| {
            lock(&self.instances)
                .get(container)
                .and_then(|runs| runs.iter().rev().find(|i| i.container_id == id).cloned())
        };
        if let Some(idx) = self.main.iter().position(|c| c == container) {
            let c = self
                .rt
                .borrow()
                .containers
                .get(idx)
                .cloned()
                .ok_or_else(|| {
                    LogError::NotFound(format!("container {container:?} not found in pod {pod:?}"))
                })?;
            let id = if previous {
                c.last
                    .map(|t| t.container_id)
                    .ok_or_else(not_found_previous)?
            } else {
                match (&c.state, &c.last) {
                    (State::Running { .. }, _) => c.container_id.clone().unwrap_or_default(),
                    (State::Terminated(t), _) => t.container_id.clone(),
                    (State::Waiting { .. }, Some(last)) => last.container_id.clone(),
                    (State::Waiting { reason, .. }, None) => {
                        return Err(LogError::BadRequest(format!(
                            "container {container:?} in pod {pod:?} is waiting to start: {reason}"
                        )))
                    }
                }
            };
            return by_id(&id).ok_or_else(|| {
                if previous {
                    not_found_previous()
                } else {
                    LogError::BadRequest(format!(
                        "the log of container {container:?} in pod {pod:?} ({id}) is no longer kept"
                    ))
                }
            });
        }
        if self.init.iter().any(|c| c == container) {
            // Init containers are not in the reported status: the latest run, or the one before.
            let all = lock(&self.instances);
            let runs = all.get(container);
            let skip = usize::from(previous);
            return runs
                .and_then(|r| r.iter().rev().nth(skip).cloned())
                .ok_or_else(|| {
                    if previous {
                        not_found_previous()
                    } else {
                        LogError::BadRequest(format!(
                            "container {container:?} in pod {pod:?} is waiting to start: PodInitializing"
                        ))
                    }
                });
        }
        Err(LogError::NotFound(format!(
            "container {container:?} not found in pod {pod:?}"
        )))
    }
}

/// One run of a container: its byte range in the log file and its time index.
pub struct Instance {
    pub container_id: String,
    pub path: PathBuf,
    pub start: u64,
    inner: Mutex<InstanceInner>,
}

struct InstanceInner {
    /// The file's length when the run ended.
    end: Option<u64>,
    /// Strictly increasing offsets, non-decreasing times.
    marks: Vec<Mark>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Mark {
    offset: u64,
    at: Timestamp,
}

impl Instance {
    pub fn end(&self) -> Option<u64> {
        lock(&self.inner).end
    }

    /// The run ended with the file `end` bytes long.
    pub fn finish(&self, end: u64, at: Timestamp) {
        let end = end.max(self.start);
        lock(&self.inner).end = Some(end);
        self.observe(end, at);
    }

    /// The file was `len` bytes long at `at`: a mark when it grew.
    pub fn observe(&self, len: u64, at: Timestamp) {
        let mut inner = lock(&self.inner);
        let len = inner.end.map_or(len, |e| len.min(e));
        if inner.marks.last().is_some_and(|m| m.offset >= len) {
            return;
        }
        let at = inner.marks.last().map_or(at, |m| at.max(m.at));
        inner.marks.push(Mark { offset: len, at });
        if inner.marks.len() > MAX_MARKS {
            let last = inner.marks.last().copied();
            let thinned: Vec<Mark> = inner.marks.iter().step_by(2).copied().collect();
            inner.marks = thinned;
            if let Some(last) = last {
                if inner.marks.last() != Some(&last) {
                    inner.marks.push(last);
                }
            }
        }
    }

    /// When the line ending at `offset` was first seen (`now` if not yet sampled).
    fn time_of(inner: &InstanceInner, offset: u64, now: Timestamp) -> Timestamp {
        let i = inner.marks.partition_point(|m| m.offset < offset);
        inner.marks.get(i).map_or(now, |m| m.at)
    }
}

/// Samples a running instance's log length until it ends (the time index).
pub async fn sample(inst: Arc<Instance>) {
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        if inst.end().is_some() {
            return;
        }
        if let Ok(m) = tokio::fs::metadata(&inst.path).await {
            inst.observe(m.len(), Timestamp::now());
        }
    }
}

/// The log file's current length (0 when missing).
pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::reader::Step;
    use super::*;
    use crate::status::{ContainerRt, Termination};
    use std::io::Write;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// A fresh directory, removed when dropped.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    fn dir(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("rc-pk-logs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn append(path: &Path, s: &str) -> u64 {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
        f.metadata().unwrap().len()
    }

    fn read_all(inst: &Arc<Instance>, opts: LogOptions) -> String {
        let mut r = LogReader::open(inst.clone(), opts).unwrap();
        let mut out = Vec::new();
        loop {
            match r.step().unwrap() {
                Step::Data(b) => out.extend(b),
                Step::Done => break,
                Step::Wait => panic!("waiting without follow"),
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn rt(state: State, last: Option<Termination>) -> PodRt {
        let mut c = ContainerRt::new("node", "img");
        c.container_id = Some("process://u/2".into());
        c.state = state;
        c.last = last;
        PodRt {
            pod_ip: None,
            host_ip: String::new(),
            start_time: ts(0),
            sandbox_ready: true,
            containers: vec![c],
            terminal: None,
        }
    }

    fn term(id: &str) -> Termination {
        Termination {
            exit_code: 137,
            signal: Some(9),
            reason: "Error".into(),
            message: None,
            started_at: ts(0),
            finished_at: ts(1),
            container_id: id.into(),
        }
    }

    #[test]
    fn current_and_previous_runs_are_their_own_byte_ranges() {
        let d = dir("runs");
        let (tx, rx) = watch::channel(rt(
            State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            None,
        ));
        let pod = PodLogs::new(
            "u",
            "p",
            d.to_path_buf(),
            vec!["init".into()],
            vec!["node".into()],
            rx,
        );
        let err = pod.select("node", false).err().unwrap();
        assert_eq!(
            err,
            LogError::BadRequest(
                "container \"node\" in pod \"p\" is waiting to start: ContainerCreating".into()
            )
        );
        assert!(matches!(
            pod.select("nope", false),
            Err(LogError::NotFound(_))
        ));

        let path = pod.log_path("node");
        let first = pod.started("node", "process://u/1", 0, ts(10));
        let end1 = append(&path, "one\ntwo\n");
        first.finish(end1, ts(11));
        let second = pod.started("node", "process://u/2", end1, ts(12));
        append(&path, "three\nfour");
        tx.send_modify(|r| {
            *r = rt(
                State::Running { started_at: ts(12) },
                Some(term("process://u/1")),
            )
        });

        let cur = pod.select("node", false).unwrap();
        assert!(Arc::ptr_eq(&cur, &second));
        assert_eq!(read_all(&cur, LogOptions::default()), "three\nfour");
        let prev = pod.select("node", true).unwrap();
        assert_eq!(read_all(&prev, LogOptions::default()), "one\ntwo\n");

        // Back-off after the second run: both the current and the previous log are its own.
        second.finish(file_len(&path), ts(13));
        tx.send_modify(|r| {
            *r = rt(
                State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: String::new(),
                },
                Some(term("process://u/2")),
            );
        });
        assert!(Arc::ptr_eq(&pod.select("node", false).unwrap(), &second));
        assert!(Arc::ptr_eq(&pod.select("node", true).unwrap(), &second));

        // No previous run yet.
        tx.send_modify(|r| *r = rt(State::Running { started_at: ts(12) }, None));
        assert_eq!(
            pod.select("node", true).err().unwrap(),
            LogError::BadRequest(
                "previous terminated container \"node\" in pod \"p\" not found".into()
            )
        );
        // Init containers: the latest run, or the one before.
        assert!(matches!(
            pod.select("init", false),
            Err(LogError::BadRequest(_))
        ));
        let i1 = pod.started("init", "process://u/5", 0, ts(1));
        assert!(Arc::ptr_eq(&pod.select("init", false).unwrap(), &i1));
        assert!(pod.select("init", true).is_err());
    }

    #[test]
    fn tail_limit_and_partial_lines() {
        let d = dir("tail");
        let path = d.join("c.log");
        let pre = append(&path, "old\n");
        append(&path, "a\nbb\nccc\nlast-no-newline");
        let (_tx, rx) = watch::channel(rt(State::Running { started_at: ts(0) }, None));
        let pod = PodLogs::new("u", "p", d.to_path_buf(), vec![], vec!["c".into()], rx);
        let inst = pod.started("c", "process://u/2", pre, ts(0));
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..LogOptions::default()
        };
        assert_eq!(read_all(&inst, tail(1)), "last-no-newline");
        assert_eq!(read_all(&inst, tail(2)), "ccc\nlast-no-newline");
        assert_eq!(read_all(&inst, tail(0)), "");
        assert_eq!(read_all(&inst, tail(99)), "a\nbb\nccc\nlast-no-newline");
        inst.finish(append(&path, "\n"), ts(1));
        assert_eq!(read_all(&inst, tail(1)), "last-no-newline\n");
        assert_eq!(read_all(&inst, tail(2)), "ccc\nlast-no-newline\n");
        let limit = LogOptions {
            limit_bytes: Some(4),
            ..LogOptions::default()
        };
        assert_eq!(read_all(&inst, limit), "a\nbb");
        // The next run's output is not part of this one.
        append(&path, "next run\n");
        assert_eq!(read_all(&inst, tail(1)), "last-no-newline\n");
    }

    #[test]
    fn timestamps_and_since_come_from_the_sampled_index() {
        let d = dir("ts");
        let path = d.join("c.log");
        let (_tx, rx) = watch::channel(rt(State::Running { started_at: ts(0) }, None));
        let pod = PodLogs::new("u", "p", d.to_path_buf(), vec![], vec!["c".into()], rx);
        let inst = pod.started("c", "process://u/2", 0, ts(100));
        inst.observe(append(&path, "early\n"), ts(101));
        inst.observe(append(&path, "late 1\nlate 2\n"), ts(200));
        inst.finish(file_len(&path), ts(300));
        let with_ts = LogOptions {
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            read_all(&inst, with_ts),
            "1970-01-01T00:01:41Z early\n1970-01-01T00:03:20Z late 1\n1970-01-01T00:03:20Z late 2\n"
        );
        let since = LogOptions {
            since: Some(ts(150)),
            ..LogOptions::default()
        };
        assert_eq!(read_all(&inst, since), "late 1\nlate 2\n");
        let both = LogOptions {
            since: Some(ts(150)),
            tail_lines: Some(3),
            limit_bytes: Some(9),
            ..LogOptions::default()
        };
        assert_eq!(read_all(&inst, both), "late 1\nla");
    }

    #[test]
    fn following_waits_for_new_lines_until_the_run_ends() {
        let d = dir("follow");
        let path = d.join("c.log");
        let (_tx, rx) = watch::channel(rt(State::Running { started_at: ts(0) }, None));
        let pod = PodLogs::new("u", "p", d.to_path_buf(), vec![], vec!["c".into()], rx);
        let inst = pod.started("c", "process://u/2", 0, ts(0));
        append(&path, "one\ntw");
        let mut r = LogReader::open(
            inst.clone(),
            LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )
        .unwrap();
        assert_eq!(r.step().unwrap(), Step::Data(b"one\n".to_vec()));
        assert_eq!(r.step().unwrap(), Step::Wait);
        append(&path, "o\nthr");
        assert_eq!(r.step().unwrap(), Step::Data(b"two\n".to_vec()));
        inst.finish(file_len(&path), ts(1));
        append(&path, "next run\n");
        assert_eq!(r.step().unwrap(), Step::Data(b"thr".to_vec()));
        assert_eq!(r.step().unwrap(), Step::Done);
    }

    #[test]
    fn marks_stay_bounded_and_ordered() {
        let (_tx, rx) = watch::channel(rt(State::Running { started_at: ts(0) }, None));
        let d = dir("marks");
        let pod = PodLogs::new("u", "p", d.to_path_buf(), vec![], vec!["c".into()], rx);
        let inst = pod.started("c", "process://u/2", 0, ts(0));
        for i in 1..=10_000u64 {
            inst.observe(i, ts(i64::try_from(i).unwrap()));
        }
        let inner = lock(&inst.inner);
        assert!(inner.marks.len() <= MAX_MARKS);
        assert_eq!(inner.marks.last().unwrap().offset, 10_000);
        assert!(inner
            .marks
            .windows(2)
            .all(|w| w[0].offset < w[1].offset && w[0].at <= w[1].at));
        // A line's time is never earlier than when it was written.
        let t = Instance::time_of(&inner, 5_000, ts(0));
        assert!(t >= ts(5_000));
    }
}
